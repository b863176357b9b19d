"""`rr work list` and `rr work show` for people (pure): columns sized to the ids, aligned fields, tails indented."""

from __future__ import annotations

import datetime as dt

from cli.commands.work import item_state
from cli.commands.workview import item_report, list_table
from eventbus.events import (
    AttemptOutcome,
    Event,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCompleted,
    WorkFailed,
    WorkHandedBack,
)
from projections import work
from projections.timeline import Selector, timeline
from tests.terms import in_term

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LONG = "selfplay-hex8_2p-populator-0042"  # 31 characters, as the populator names its items
TAIL = (
    'Traceback (most recent call last):\n  File "<frozen runpy>", line 198, in _run_module_as_main\n'
    "ModuleNotFoundError: No module named 'numpy'\n"
)
CAUSE = "ModuleNotFoundError: No module named 'numpy'"


def history(work_id: str = LONG) -> list[tuple[int, Event]]:
    events: list[Event] = [
        WorkAdded(work_id=work_id, work_type="selfplay", board_type="hex8", num_players=2, num_games=40, ts=T0),
        WorkAssigned(work_id=work_id, node="gpu-3", attempt=1, deadline=T0 + dt.timedelta(hours=1), ts=T0),
        WorkAttemptFailed(work_id=work_id, node="gpu-3", attempt=1, reason="exited with status 1", exit_code=1,
                          stderr_tail=TAIL, cause=CAUSE, ts=T0),
        WorkFailed(work_id=work_id, reason="gave up after 1 failed attempts (max_attempts 1): exited with status 1",
                   attempts=[AttemptOutcome(attempt=1, node="gpu-3", reason="exited with status 1")], ts=T0),
        WorkCompleted(work_id=work_id, node="ghost", attempt=1, ts=T0),
    ]
    return list(enumerate(in_term(events), start=9))  # the term's election at 9, the item's events from 10


def test_list_columns_are_as_wide_as_the_longest_id_and_say_why() -> None:
    state = item_state(history())
    short = item_state(history("w-1"))
    text = list_table([*state.items.values(), *short.items.values()])
    header, long_row, short_row = text.splitlines()
    assert header.index("TYPE") == len(LONG) + 2, "the id column fits the longest id"
    assert long_row.index("selfplay ") == header.index("TYPE") == short_row.index("selfplay ")
    assert long_row.split()[:5] == [LONG, "selfplay", "hex8_2p", "40", "failed"]
    assert long_row.endswith(CAUSE)


def test_show_prints_aligned_fields_one_line_per_event_and_the_tail_indented_under_its_attempt() -> None:
    found = history()
    state = item_state(found)
    refused = {a.seq: a.reason for a in state.anomalies}
    text = item_report(LONG, found, refused, state.items[LONG])
    assert "AttemptOutcome(" not in text and "WorkAttemptFailed(" not in text, "no Python reprs"
    head, events = text.split("\n\n")
    values = {line[:10].strip(): line[10:] for line in head.splitlines()}
    assert list(values)[:5] == ["work", "status", "attempts", "node", "cause"] and values["cause"] == CAUSE
    assert all(line[8:10] == "  " and line[10] != " " for line in head.splitlines()), "values start in one column"
    lines = events.splitlines()
    failed = next(i for i, line in enumerate(lines) if "WORK_ATTEMPT_FAILED" in line)
    what = lines[0].index("WHAT")
    assert lines[failed][what:] == f"attempt 1 failed on gpu-3: exited with status 1 (exit 1) -- {CAUSE}"
    assert lines[failed + 1].strip() == "stderr:" and lines[failed + 1].index("stderr:") > what
    tail = lines[failed + 2: failed + 5]
    assert [t.strip() for t in tail] == [x.strip() for x in TAIL.splitlines()]
    assert all(t.startswith(" " * (what + 8)) for t in tail), "the tail is indented under its attempt"
    given_up = next(i for i, line in enumerate(lines) if "WORK_FAILED" in line)
    assert lines[given_up + 1].strip() == "attempt 1 on gpu-3: exited with status 1"
    assert lines[-1].strip().startswith("not applied: ") and "ghost" in lines[-1]
    assert values["status"].startswith(work.WorkStatus.FAILED.value)
    assert values["attempts"] == "1 (1 failed, 0 handed back)"


def test_the_timeline_of_an_item_gives_each_failed_attempts_cause_and_each_hand_back() -> None:
    found = history()[:4]  # the election, then the item's first three events
    found.append((13, WorkHandedBack(work_id=LONG, node="gpu-3", attempt=2, reason="worker stopping", ts=T0)))
    lines = [line.text for line in timeline(found, Selector(work=LONG))]
    assert lines[2].endswith(f"failed on gpu-3: exited with status 1 (exit 1) -- {CAUSE}")
    assert lines[3] == f"work {LONG} attempt 2 handed back by gpu-3 (not a failed attempt): worker stopping"
