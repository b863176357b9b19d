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
"""

from __future__ import annotations

import msgspec

from eventbus.events import Event, WorkAssigned, WorkAttemptFailed, WorkCompleted, WorkHandedBack, WorkStarted
from projections.fencing import ADMITTED, FenceView, judge
from projections.pmap import PMap

KINDS: frozenset[type[Event]] = frozenset({WorkAssigned, WorkStarted, WorkAttemptFailed, WorkHandedBack, WorkCompleted})
READS = frozenset(t.type_name() for t in KINDS)


class ItemAttempts(msgspec.Struct, frozen=True):
    """One item's newest attempt and node, and the attempts that ended with nothing newer started since."""

    attempt: int
    node: str
    ended: tuple[tuple[int, str], ...] = ()


class Attempts(msgspec.Struct, frozen=True, kw_only=True):
    """The attempts of every work item assigned so far."""

    items: PMap[str, ItemAttempts] = msgspec.field(default_factory=PMap)


def learned(attempts: Attempts, fence: FenceView, event: Event) -> Attempts:
    """What the attempts are after one of READS (a decision the fence refuses teaches nothing).

    Kept in step with projections/work.py: an attempt that ended stays able to complete until a
    newer attempt starts or the item completes.
    """
    if event.epoch is not None and judge(fence, event) not in ADMITTED:
        return attempts
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
    return Attempts(items=attempts.items.set(work_id, item))


def late(attempts: Attempts, work_id: str, attempt: int, node: str) -> str | None:
    """Why a domain result of `work_id` is not one the item may still take, or None when it is.

    An item this fold never saw assigned is not judged here (the work fold records unknown items).
    """
    now = attempts.items.get(work_id)
    if now is None:
        return None
    if attempt == 0:
        if now.attempt <= 1:
            return None
        return (f"result of {work_id} without an attempt (written before results carried one) "
                f"while attempt {now.attempt} is current: which attempt wrote it is unknown")
    if (attempt, node) == (now.attempt, now.node) or (attempt, node) in now.ended:
        return None
    return f"late result of {work_id} attempt {attempt} on {node}: attempt {now.attempt} on {now.node} is current"
