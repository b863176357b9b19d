"""Only the current attempt counts: which attempts of each work item may still report, and whether a result is one's.

A work item may be tried several times (its node went offline, its attempt stalled or was
handed back); a superseded attempt can still finish and report. The folds that act on domain
results (the pipeline, data and models) apply a result only when the work fold would take that
attempt's completion (projections/work.py): it is the item's current attempt, or an attempt that
ended (failed or handed back) while no newer attempt has started since -- a late completion.
Anything else is a late result of a superseded attempt: recorded as an anomaly, deciding
nothing (a late evaluation of a superseded attempt must not promote a model its current attempt
judged too weak). Each of those folds keeps an `Attempts` value, taught by the work events in
READS (assignments only when the fence admits them).

Results written before they carried their attempt decode with `attempt = 0`. Such a result is
applied when its item has had at most one attempt (there is nothing it could be superseded by)
and recorded as an anomaly otherwise, since no one can tell which attempt wrote it.

Completed items retire: RETIRE_AFTER records after its completion an item leaves `items`, and
what stays of it is its id in `completed`, in one string per SPAN records of completions, which
says "done": any later result of it is refused, as any result of an attempt that is not its last
was before (a result of its last attempt that long after the completion is refused too). Without
that, `items` held every item ever assigned, three times over (data, models, Elo): a dict entry
per item that every service start decoded. A string of ids decodes as one object, and is only
searched when a result names an item not in `items` (rare: a result of an item never assigned,
or retired).
"""

from __future__ import annotations

import msgspec

from eventbus.events import Event, WorkAssigned, WorkAttemptFailed, WorkCompleted, WorkHandedBack, WorkStarted
from projections.fencing import ADMITTED, FenceView, judge
from projections.pmap import PMap

KINDS: frozenset[type[Event]] = frozenset({WorkAssigned, WorkStarted, WorkAttemptFailed, WorkHandedBack, WorkCompleted})
READS = frozenset(t.type_name() for t in KINDS)

# A completed item's attempts leave `items` this many records after its completion: its last
# attempt's own results come right after it (data's batches retire as late, projections/data.py).
RETIRE_AFTER = 150_000
# Completions are kept in one string of ids per SPAN records: appending copies at most SPAN ids,
# and a year's log (~1.6M items) holds ~20k strings, not a dict entry per item.
SPAN = 1024
_SEP = "\n"  # between ids in a string of `completed`; an id holding it never retires (kept in `items`)


class ItemAttempts(msgspec.Struct, frozen=True):
    """One item's newest attempt and node, and the attempts that ended with nothing newer started since."""

    attempt: int
    node: str
    ended: tuple[tuple[int, str], ...] = ()


class Attempts(msgspec.Struct, frozen=True, kw_only=True):
    """The attempts of every work item assigned and not retired, and the ids of the completed ones."""

    items: PMap[str, ItemAttempts] = msgspec.field(default_factory=PMap)
    # SPAN-record window (seq // span) -> "\n"-separated ids completed in it, each with a "\n" either side
    completed: PMap[int, str] = msgspec.field(default_factory=PMap)
    completing: tuple[str, ...] = ()  # the ids completed in the newest window, joined into `completed` when it ends
    completing_window: int = 0
    retired_before: int = 0  # the windows below this one retired: their items left `items`
    retire_after: int = RETIRE_AFTER
    span: int = SPAN


def learned(attempts: Attempts, fence: FenceView, event: Event, seq: int) -> Attempts:
    """What the attempts are after one of READS at stream position `seq` (a decision the fence refuses teaches nothing).

    Kept in step with projections/work.py: an attempt that ended stays able to complete until a
    newer attempt starts or the item completes. A completion retires the items completed
    `retire_after` records before it.
    """
    return learned_as(attempts, event.epoch is None or judge(fence, event) in ADMITTED, event, seq)


def learned_as(attempts: Attempts, admitted: bool, event: Event, seq: int) -> Attempts:
    """`learned` given the fence's answer: the bundle's work-event step (projections/setstep.py) asks a fence once
    for the data, models and Elo folds, whose attempts are one value while a rebuild folds from sequence 1."""
    moved = _moved(attempts, event) if admitted else attempts
    if type(event) is WorkCompleted:  # by class: the fold's hot path
        return _completed(moved, event.work_id, seq)
    return moved


def _moved(attempts: Attempts, event: Event) -> Attempts:
    work_id: str = event.work_id  # type: ignore[attr-defined]  # every event this fold reads names its work item
    now = attempts.items.get(work_id)
    if isinstance(event, WorkAssigned):
        if now is not None and event.attempt <= now.attempt:
            return attempts
        ended = now.ended if now is not None else ()
        return _set(attempts, work_id, ItemAttempts(event.attempt, event.node, ended))
    if now is None:
        return attempts  # never assigned in this fold: nothing to judge by
    if not now.ended and not isinstance(event, (WorkAttemptFailed, WorkHandedBack)):
        return attempts  # a start or a completion with no ended attempt to forget: the common case, nothing moves
    if isinstance(event, WorkStarted):
        ended = tuple(e for e in now.ended if e[0] >= event.attempt)
    elif isinstance(event, (WorkAttemptFailed, WorkHandedBack)):
        ended = (*now.ended, (event.attempt, event.node))
    else:  # WorkCompleted: the item is done, no other attempt may complete it
        ended = ()
    return attempts if ended == now.ended else _set(attempts, work_id, msgspec.structs.replace(now, ended=ended))


def _set(attempts: Attempts, work_id: str, item: ItemAttempts) -> Attempts:
    return msgspec.structs.replace(attempts, items=attempts.items.set(work_id, item))


def _completed(attempts: Attempts, work_id: str, seq: int) -> Attempts:
    """`attempts` with `work_id` noted completed at `seq`; a new window retires the windows past `retire_after`."""
    window = seq // attempts.span
    if window != attempts.completing_window:
        attempts = _retired_through(_window_ended(attempts, window), seq)
    if work_id in attempts.items and _SEP not in work_id:
        attempts = msgspec.structs.replace(attempts, completing=(*attempts.completing, work_id))
    return attempts


def _window_ended(attempts: Attempts, window: int) -> Attempts:
    """`attempts` with the ids completed in the window that ended joined into `completed`, and `window` begun."""
    completed = attempts.completed
    if attempts.completing:
        completed = completed.set(attempts.completing_window, f"{_SEP}{_SEP.join(attempts.completing)}{_SEP}")
    return msgspec.structs.replace(attempts, completed=completed, completing=(), completing_window=window)


def _retired_through(attempts: Attempts, seq: int) -> Attempts:
    """`attempts` without the items of every window that ended `retire_after` records before `seq`."""
    horizon = (seq - attempts.retire_after) // attempts.span  # every window below it ended retire_after records ago
    if horizon <= attempts.retired_before:
        return attempts
    items, windows = attempts.items, range(attempts.retired_before, horizon)  # once each over a fold: ~20k at a year's log
    if len(windows) > len(attempts.completed):  # a long gap (a fold starting late in the log): ask the map
        windows = sorted(w for w in attempts.completed.keys() if attempts.retired_before <= w < horizon)  # type: ignore[assignment]
    for window in windows:
        for work_id in attempts.completed.get(window, _SEP).split(_SEP)[1:-1]:
            items = items.remove(work_id)
    return msgspec.structs.replace(attempts, items=items, retired_before=horizon)


def retired(attempts: Attempts, work_id: str) -> bool:
    """Whether the item completed and retired (its attempts left `items`)."""
    needle = f"{_SEP}{work_id}{_SEP}"
    return any(needle in ids for window, ids in attempts.completed.items() if window < attempts.retired_before)


def late(attempts: Attempts, work_id: str, attempt: int, node: str) -> str | None:
    """Why a domain result of `work_id` is not one the item may still take, or None when it is.

    An item this fold never saw assigned is not judged here (the work fold records unknown items);
    one that completed and retired is done, and refuses every result.
    """
    now = attempts.items.get(work_id)
    if now is None:
        if retired(attempts, work_id):
            return f"late result of {work_id} attempt {attempt} on {node}: the item completed and retired"
        return None
    if attempt == 0:
        if now.attempt <= 1:
            return None
        return (f"result of {work_id} without an attempt (written before results carried one) "
                f"while attempt {now.attempt} is current: which attempt wrote it is unknown")
    if (attempt, node) == (now.attempt, now.node) or (attempt, node) in now.ended:
        return None
    return f"late result of {work_id} attempt {attempt} on {node}: attempt {now.attempt} on {now.node} is current"
