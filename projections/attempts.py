"""Only the current attempt counts: which attempt of each work item is current, and whether a result belongs to it.

A work item may be tried several times (its node went offline, its attempt stalled); a superseded
attempt can still finish and report. The work fold flags such a report, and the folds that act on
domain results (the pipeline, data and models) must not count it either: a late evaluation of a
superseded attempt must not promote a model its current attempt judged too weak. Each of those
folds keeps an `Attempts` value, taught by the (fenced) WORK_ASSIGNED decisions, and applies a
domain result only when `late` finds nothing wrong with it.

Results written before they carried their attempt decode with `attempt = 0`. Such a result is
applied when its item has had at most one attempt (there is nothing it could be superseded by)
and recorded as an anomaly otherwise, since no one can tell which attempt wrote it.
"""

from __future__ import annotations

import msgspec

from eventbus.events import WorkAssigned
from projections.pmap import PMap
from services.leadership.fencing import ADMITTED, FenceView, judge


class CurrentAttempt(msgspec.Struct, frozen=True):
    """The newest attempt of one work item, and the node it was given to."""

    attempt: int
    node: str


class Attempts(msgspec.Struct, frozen=True, kw_only=True):
    """The current attempt of every work item assigned so far."""

    current: PMap[str, CurrentAttempt] = msgspec.field(default_factory=PMap)


def assigned(attempts: Attempts, event: WorkAssigned) -> Attempts:
    """What is current after an assignment (one not newer than the current attempt changes nothing)."""
    now = attempts.current.get(event.work_id)
    if now is not None and event.attempt <= now.attempt:
        return attempts
    return Attempts(current=attempts.current.set(event.work_id, CurrentAttempt(event.attempt, event.node)))


def assigned_if_current(attempts: Attempts, fence: FenceView, event: WorkAssigned) -> Attempts:
    """`assigned` for an assignment the fence admits; for folds that read assignments only for this, so that
    a stale one is counted once, by the work fold, not again by each of them."""
    return assigned(attempts, event) if judge(fence, event) in ADMITTED else attempts


def late(attempts: Attempts, work_id: str, attempt: int, node: str) -> str | None:
    """Why a domain result of `work_id` does not belong to its current attempt, or None when it does.

    An item this fold never saw assigned is not judged here (the work fold records unknown items).
    """
    now = attempts.current.get(work_id)
    if now is None:
        return None
    if attempt == 0:
        if now.attempt <= 1:
            return None
        return (f"result of {work_id} without an attempt (written before results carried one) "
                f"while attempt {now.attempt} is current: which attempt wrote it is unknown")
    if attempt != now.attempt or node != now.node:
        return f"late result of {work_id} attempt {attempt} on {node}: attempt {now.attempt} on {now.node} is current"
    return None
