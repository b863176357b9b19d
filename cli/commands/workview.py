"""How `rr work list` and `rr work show` read for people, pure: aligned columns, one line per event, tails indented.

No Python reprs: every value is spelled out (an attempt as "attempt 2 on gpu-3: reason"), and a
failed attempt's stderr tail is printed under it, indented, as the job wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable

from cli.commands.status import table, when
from eventbus.events import Event, WorkAttemptFailed, WorkFailed
from projections import work
from projections.sentences import sentence

INDENT = " " * 4
TAIL_LINES = 20  # of a failed attempt's stderr tail (the whole tail is in --json)


def why(item: work.WorkItem) -> str:
    """The one line that says why an item is where it is: no node can run it, its last failure's cause, else its reason."""
    return f"unschedulable: {item.unschedulable}" if item.unschedulable else item.cause or item.reason


def list_table(items: Iterable[work.WorkItem]) -> str:
    """`rr work list`: one row per item, every column as wide as its longest value."""
    rows = [("WORK_ID", "TYPE", "CONFIG", "GAMES", "STATE", "ATT", "NODE", "WHY")]
    rows += [(i.work_id, i.work_type, i.config, str(i.num_games), i.status.value, str(i.attempt), i.node or "-",
              why(i) if i.status is not work.WorkStatus.COMPLETED else "") for i in items]
    return table(rows)


def retired_note(hidden: int, retire_after: int) -> str:
    """The line saying how many completed items the list leaves out and how to see one ("" when none)."""
    if not hidden:
        return ""
    return (f"{hidden} completed items older than {retire_after:,} records are not listed; "
            "`rr work show ID` (or `rr timeline --work ID`) reads one from the log")


def item_summary(item: work.WorkItem) -> str:
    """The item's fields, one per line, labels aligned."""
    games = f", {item.num_games} games" if item.num_games else ""
    fields = [
        ("work", f"{item.work_id}: {item.work_type} {item.config}{games}"),
        ("status", item.status.value + (f" ({item.reason})" if item.reason else "")),
        ("attempts", f"{item.attempt} ({item.failures} failed, {item.handed_back} handed back)"),
        ("node", item.node or (f"none can run it: {item.unschedulable}" if item.unschedulable else "-")),
        ("cause", item.cause or "-"),
        ("added", when(item.added_at)),
        ("updated", when(item.updated_at)),
    ]
    width = max(len(label) for label, _ in fields)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in fields)


def event_details(event: Event) -> list[str]:
    """What goes under an event's line: each attempt of a given-up item, a failed attempt's stderr tail."""
    if isinstance(event, WorkFailed):
        return [f"attempt {a.attempt} on {a.node}: {a.reason}" for a in event.attempts]
    if isinstance(event, WorkAttemptFailed) and event.stderr_tail.strip():
        lines = event.stderr_tail.rstrip().splitlines()
        cut = [f"... ({len(lines) - TAIL_LINES} earlier lines)"] if len(lines) > TAIL_LINES else []
        return ["stderr:", *cut, *(INDENT + line for line in lines[-TAIL_LINES:])]
    return []


def item_report(work_id: str, found: list[tuple[int, Event]], refused: dict[int, str], item: work.WorkItem | None) -> str:
    """`rr work show`: the item's fields, then its events in order, details indented under each."""
    rows = [("SEQ", "TIME", "EVENT", "WHAT")]
    details: dict[int, list[str]] = {}
    for seq, event in found:
        what = sentence(event).removeprefix(f"work {work_id} ")
        rows.append((str(seq), when(event.ts), event.type_name(), what))
        details[seq] = event_details(event) + ([f"not applied: {refused[seq]}"] if seq in refused else [])
    lines = table(rows).splitlines()
    margin = " " * (lines[0].index("WHAT") + len(INDENT))
    out = [lines[0]]
    for (seq, _), line in zip(found, lines[1:]):
        out.append(line)
        out += [margin + d for d in details[seq]]
    head = item_summary(item) if item is not None else f"work {work_id}"
    return head + "\n\n" + "\n".join(out)
