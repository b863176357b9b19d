"""The node side of the assignment protocol, pure: given events, what to start, what to stop, what to ignore.

The worker asks two questions of each event it consumes:
  - a WORK_ASSIGNED for this node: start it? (`decide_assignment`, from the item's own history)
  - any WORK_ASSIGNED or WORK_CANCELLED: does it end an attempt this node runs? (`decide_stops`)
  - its WORK_STARTED refused by the fence on the assignment: may it still start? (`recheck_start`)
What the item's history says is the shared work fold's (projections/work.py `item_history`): the
worker keeps no fold of its own. Nothing here does I/O; the service reads the log and acts on the answers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import msgspec

from eventbus.events import (
    Event,
    WorkAdded,
    WorkAssigned,
    WorkCancelled,
    WorkStarted,
)
from eventbus.publisher import FenceToken
from eventbus.subjects import EVENTS_ROOT, aggregate_filter, token
from projections import work
from projections.syncwork import SYNC_WORK


class AttemptKey(msgspec.Struct, frozen=True, order=True):
    """One attempt of one work item: what a running job is."""

    work_id: str
    attempt: int


def item_over(item: work.WorkItem) -> str:
    """How the item is over for a worker: "completed", "failed" or "cancelled"; "" while it is not.

    Any completion in the log closes it, even one the lifecycle refused (from a superseded
    attempt): its work is done, and running it again would only repeat it.
    """
    if item.completed_by is not None:
        return "completed"
    return item.status.value if item.status in work.TERMINAL else ""


def added_event(item: work.WorkItem | None, history: Iterable[tuple[int, Event]]) -> WorkAdded | None:
    """The WORK_ADDED the item was made from (the one the fold took), from its history."""
    if item is None:
        return None
    return next((e for seq, e in history if seq == item.added_seq and isinstance(e, WorkAdded)), None)


class Start(msgspec.Struct, frozen=True, kw_only=True):
    """Run this attempt here."""

    assignment: WorkAssigned
    item: WorkAdded


class Ignore(msgspec.Struct, frozen=True, kw_only=True):
    """Not ours to act on (another node's, stale, superseded, over, a redelivery); logged only."""

    reason: str


class Refuse(msgspec.Struct, frozen=True, kw_only=True):
    """Ours, but it cannot run: answered with WORK_ATTEMPT_FAILED at once."""

    reason: str


Decision = Start | Ignore | Refuse


def screen_assignment(assignment: WorkAssigned, node: str, admitted: bool) -> Ignore | None:
    """The checks that need no history: another node's assignment, or a stale leader's."""
    if assignment.node != node:
        return Ignore(reason=f"assigned to {assignment.node}")
    if not admitted:
        return Ignore(reason=f"stale epoch {assignment.epoch}: a newer scheduler leader was elected")
    return None


def decide_assignment(
    assignment: WorkAssigned, node: str, admitted: bool, history: Sequence[tuple[int, Event]],
    running: Iterable[AttemptKey], now: dt.datetime,
) -> Decision:
    """Whether this node starts an assignment, given the item's history (seq, event) up to and including it."""
    screened = screen_assignment(assignment, node, admitted)
    if screened is not None:
        return screened
    if AttemptKey(assignment.work_id, assignment.attempt) in set(running):
        return Ignore(reason="already held by this worker (a redelivery, or left by the previous process)")
    item = work.item_history(assignment.work_id, history)
    if item is not None and (moved := moved_on(item, assignment, node)) is not None:
        return moved
    if assignment.deadline <= now:
        return Ignore(reason=f"deadline {assignment.deadline.isoformat()} already passed")
    added = added_event(item, history)
    if added is None:
        return Refuse(reason=f"work item {assignment.work_id} has no WORK_ADDED in the log")
    if added.work_type == SYNC_WORK:
        return Ignore(reason="a sync item: the node's sync service copies the batch, no process runs")
    return Start(assignment=assignment, item=added)


def moved_on(item: work.WorkItem, assignment: WorkAssigned, node: str) -> Ignore | None:
    """Why the item's log says the assignment is no longer this node's to start, or None while it is."""
    mine = (assignment.attempt, node)
    if over := item_over(item):
        return Ignore(reason=f"item already {over}")
    if item.attempt > assignment.attempt:
        return Ignore(reason=f"superseded by attempt {item.attempt} on {item.node}")
    if mine in item.settled:
        return Ignore(reason="attempt already ended")
    if mine in item.started:
        return Ignore(reason="attempt already started by an earlier worker process")
    return None


class Stop(msgspec.Struct, frozen=True, kw_only=True):
    """Stop a running (or queued) attempt, and report it failed (or handed back) with this reason."""

    key: AttemptKey
    reason: str
    hand_back: bool = False  # the item moved on (a newer attempt): no fault of the job


def decide_stops(event: Event, admitted: bool, running: Iterable[AttemptKey]) -> list[Stop]:
    """Attempts this node runs that an event ends: a cancel of the item, or a newer attempt of it."""
    if not admitted:
        return []
    if isinstance(event, WorkCancelled):
        why = f"cancelled: {event.reason}" if event.reason else "cancelled"
        return [Stop(key=k, reason=why) for k in running if k.work_id == event.work_id]
    if isinstance(event, WorkAssigned):
        why = f"superseded by attempt {event.attempt} on {event.node}"
        return [Stop(key=k, reason=why, hand_back=True) for k in running if k.work_id == event.work_id and k.attempt < event.attempt]
    return []


def attempt_settled(item: work.WorkItem | None, key: AttemptKey, node: str) -> bool:
    """Whether the log already holds the end (completed, failed or handed back) of this node's attempt."""
    return item is not None and (key.attempt, node) in item.settled


def parallel_jobs(hosts_entry_jobs: int | None, configured: int) -> int:
    """Jobs run at once: the hosts file's max_parallel_jobs for this node, else the worker setting."""
    return hosts_entry_jobs if hosts_entry_jobs is not None and hosts_entry_jobs > 0 else configured


def describe_parallel_jobs(hosts_entry_jobs: int | None, configured: int) -> str:
    """How many jobs this worker runs and which setting says so, for its start line (the value as configured)."""
    if hosts_entry_jobs == 0:
        return "the hosts file gives this node max_parallel_jobs: 0, so the scheduler assigns it no jobs"
    if hosts_entry_jobs is not None:
        return f"{hosts_entry_jobs} job(s) at once (hosts file max_parallel_jobs: {hosts_entry_jobs})"
    return f"{configured} job(s) at once (worker.max_parallel_jobs: {configured}; the hosts file does not list this node)"



def started_fence(work_id: str, started_seq: int) -> FenceToken:
    """An attempt's end is stored only while its WORK_STARTED (at `started_seq`) is the item's newest: once another
    attempt of the item has started, the attempt no longer counts and JetStream refuses its end (see README,
    "Late completions")."""
    return FenceToken(subject_filter=f"{EVENTS_ROOT}.{WorkStarted.aggregate}.{token(work_id)}.{WorkStarted.type_name()}.*",
                      seq=started_seq)


def assignment_fence(work_id: str, assigned_seq: int) -> FenceToken:
    """A WORK_STARTED is stored only while the assignment it answers (at `assigned_seq`) is still the item's newest
    event: an end of an older attempt (a late completion), a cancel or a newer assignment stored since refuses it
    (README, "Late completions")."""
    return FenceToken(subject_filter=aggregate_filter(WorkStarted.aggregate, work_id), seq=assigned_seq)


class Claim(msgspec.Struct, frozen=True):
    """The attempt may still start: publish its WORK_STARTED again, fenced on the item's newest event (`seq`)."""

    seq: int


class Claimed(msgspec.Struct, frozen=True):
    """The WORK_STARTED is already stored (at `seq`): an earlier try was stored but its ack was lost."""

    seq: int


def recheck_start(started: WorkStarted, assignment: WorkAssigned, history: Sequence[tuple[int, Event]],
                  running: Iterable[AttemptKey], now: dt.datetime) -> Claim | Claimed | Ignore:
    """After the fence refused `started`: judge the assignment again on the item's whole history (seq, event), now.

    It was admitted when it came; what happened to the item since (a completion, a cancel, a newer
    attempt) is in the history, so only the history decides.
    """
    mine = [seq for seq, event in history if event.id == started.id]
    if mine:  # a retry after a lost ack meets its own WORK_STARTED as the item's newest event
        return Claimed(seq=mine[0])
    key = AttemptKey(assignment.work_id, assignment.attempt)
    others = [k for k in running if k != key]  # this worker holds the attempt itself while it asks
    decision = decide_assignment(assignment, started.node, True, history, others, now)
    if isinstance(decision, Start):
        return Claim(seq=max(seq for seq, _ in history))
    if isinstance(decision, Refuse):  # no WORK_ADDED any more: cannot happen to an item it was started from
        return Ignore(reason=decision.reason)
    return decision


def recheck_hand_back(key: AttemptKey, node: str, history: Sequence[tuple[int, Event]]) -> Claim | Ignore:
    """After the fence refused this node's hand-back of `key`: judge it again on the item's whole history (seq, event).

    A worker's hand-back is stored only while nothing it has not seen reached the item since. What
    came in between decides: an end of the attempt (the leader handed it back for a node that said
    goodbye while its worker was still stopping the job) or a newer attempt's start makes it a
    second end of one attempt, dropped; anything else (a progress report whose ack was lost) lets
    it try again, fenced on the item's newest event.
    """
    item = work.item_history(key.work_id, history)
    if item is None or not history:
        return Ignore(reason=f"work item {key.work_id} has no history")
    if attempt_settled(item, key, node):
        return Ignore(reason="the log already ends the attempt")
    newer = [a for a, _ in item.started if a > key.attempt]
    if newer:
        return Ignore(reason=f"attempt {max(newer)} of the item started meanwhile")
    return Claim(seq=max(seq for seq, _ in history))
