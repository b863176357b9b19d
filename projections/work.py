"""Work items through their lifecycle, from one transition table; an illegal event is recorded, never applied."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from eventbus.events import (
    AttemptOutcome,
    Event,
    LeaderElected,
    LeaseWritten,
    TrainingStarted,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
    WorkHandedBack,
    WorkProgress,
    WorkSchedulable,
    WorkStarted,
    WorkUnschedulable,
)
from projections.base import Anomaly, Projection, config_key, rejected, total
from projections.fence import Fence, judged
from projections.openmap import Spec
from projections.packedmap import PackedMap
from projections.pmap import PMap
from projections.workretirement import RETIRE_AFTER, Retired
from projections.workretirement import retire as _retire

# 2: failures and late completions (handed-back attempts do not count)
# 3: elections believed only from candidates announcing their own win; epoch-less decisions dropped
# 4: completed items retire from `items` RETIRE_AFTER records after their completion
# 5: an item keeps its target node, its current attempt's deadline and its failed attempts' outcomes
#    (what the scheduler's supervision used to fold beside it), and the model it is about
# 6: an item keeps the attempts the log says started and ended, and its first completion, taken or
#    refused (what the worker used to fold beside it)
# 7: retired items packed, one string per hash bucket (projections/packedmap.py), not a dict entry each
VERSION = 7



class WorkStatus(enum.Enum):
    """Where a work item is in its life (the seeds' job states, plus cancelled)."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


P, A, R = WorkStatus.PENDING, WorkStatus.ASSIGNED, WorkStatus.RUNNING
C, F, X = WorkStatus.COMPLETED, WorkStatus.FAILED, WorkStatus.CANCELLED

# The lifecycle, in one place. A (state, event) pair not listed is an illegal transition.
# A new WORK_ASSIGNED supersedes the current attempt (the leader re-assigned it, e.g. its node
# went offline); a failed or handed-back attempt puts the item back to pending until it is
# re-assigned or given up on. A completion of an attempt that already ended is judged by
# `late_completion` before this table. A pending item that no alive node can run is marked
# unschedulable (with why) and stays pending until it can run again, is assigned, or is given up on.
TRANSITIONS: dict[WorkStatus, dict[type[Event], WorkStatus]] = {
    P: {WorkAssigned: A, WorkFailed: F, WorkCancelled: X, WorkUnschedulable: P, WorkSchedulable: P},
    A: {
        WorkAssigned: A, WorkStarted: R, WorkCompleted: C, WorkAttemptFailed: P, WorkHandedBack: P, WorkFailed: F,
        WorkCancelled: X,
    },
    R: {
        WorkAssigned: A, WorkProgress: R, TrainingStarted: R, WorkCompleted: C, WorkAttemptFailed: P,
        WorkHandedBack: P, WorkFailed: F, WorkCancelled: X,
    },
    C: {},
    F: {},
    # A cancelled attempt still reports how it ended (the worker stopped it): recorded, no move.
    X: {WorkProgress: X, WorkAttemptFailed: X, WorkHandedBack: X},
}
# Every type that makes an item's life: what this fold reads besides its fence's elections.
LIFECYCLE: frozenset[type[Event]] = frozenset({WorkAdded, *(t for moves in TRANSITIONS.values() for t in moves)})
# States in which a completion of an attempt that ended (handed back or failed) is still taken:
# nothing newer has started, and the item was not cancelled.
LATE_COMPLETION_STATES = frozenset({P, A, F})
TERMINAL = frozenset({C, F, X})
ACTIVE = frozenset({A, R})  # states in which an attempt holds a node
# TRANSITIONS by the status's own value: a dict keyed by the member hashes it through
# Enum.__hash__, a Python function, on every event; its `_value_` string hashes in C (cached).
_MOVES: dict[str, dict[type[Event], WorkStatus]] = {status._value_: moves for status, moves in TRANSITIONS.items()}


class WorkItem(msgspec.Struct, frozen=True, kw_only=True, gc=False):  # untracked: no cycles (services/leader/queue.py)
    """One work item: what it is, where it is in its life, and its current attempt."""

    work_id: str
    work_type: str
    board_type: str
    num_players: int
    num_games: int = 0
    priority: int | None = None
    status: WorkStatus = WorkStatus.PENDING
    attempt: int = 0  # the current (newest) attempt; 0 before the first assignment
    node: str | None = None  # node of the current attempt
    epoch: int | None = None  # epoch of the assignment of the current attempt
    progress: float | None = None
    reason: str = ""  # why it failed, was cancelled, or its last attempt failed
    cause: str = ""  # the last failed attempt's cause: its job's last exception line
    failures: int = 0  # attempts that ended failed; handed-back ones do not count towards max_attempts
    handed_back: int = 0  # attempts handed back (worker stopped, node removed)
    # Attempts that ended (handed back or failed) with no newer attempt started since: a
    # completion from one of them is still accepted (see late_completion).
    ended: tuple[tuple[int, str], ...] = ()
    added_seq: int = 0
    added_at: dt.datetime | None = None
    updated_seq: int = 0
    updated_at: dt.datetime | None = None
    trace: str | None = None  # WORK_ADDED's trace context: the item's decisions and reports continue it
    unschedulable: str = ""  # while pending: why no alive node can run it (WORK_UNSCHEDULABLE); "" when one can
    unschedulable_since: dt.datetime | None = None
    target_node: str | None = None  # WORK_ADDED's: the only node that may run it
    model_id: str = ""  # WORK_ADDED's params.model_id: the candidate an evaluation judges ("" for none)
    deadline: dt.datetime | None = None  # of the current attempt (kept after it ends: read while it holds a node)
    # The attempts that failed (not handed back), in order: one per `failures`, for WORK_FAILED's record.
    outcomes: tuple[AttemptOutcome, ...] = ()
    failed_at: dt.datetime | None = None  # when the newest of them failed: its retry waits scheduler.retry_backoff
    # What the log holds of each attempt, whether the lifecycle took the event or refused it (late,
    # superseded): (attempt, node) pairs, first report first. A worker reads them to tell whether an
    # attempt of its own already started or ended (a redelivered assignment, a restart), as
    # JetStream's fences on WORK_STARTED do.
    started: tuple[tuple[int, str], ...] = ()  # every WORK_STARTED
    settled: tuple[tuple[int, str], ...] = ()  # every end: WORK_COMPLETED, WORK_ATTEMPT_FAILED, WORK_HANDED_BACK
    completed_by: tuple[int, str] | None = None  # the first WORK_COMPLETED: the item's work is done, even if refused

    @property
    def config(self) -> str:
        """Its training config, e.g. hex8_2p."""
        return config_key(self.board_type, self.num_players)


class WorkState(msgspec.Struct, frozen=True, kw_only=True, gc=False):  # untracked, as WorkItem
    """Every open or recently finished work item by id and how many are in each state, at stream position `last_seq`."""

    last_seq: int = 0
    items: PMap[str, WorkItem] = msgspec.field(default_factory=PMap)
    counts: dict[str, int] = {}  # status value -> number of items, retired ones included
    fence: Fence = msgspec.field(default_factory=Fence)
    anomalies: tuple[Anomaly, ...] = ()
    anomaly_count: int = 0
    retire_after: int = RETIRE_AFTER
    # Completed items still in `items`, by the sequence of their completion (the next to retire).
    completions: PMap[int, str] = msgspec.field(default_factory=PMap)
    # Completions up to this sequence have retired; it runs ahead to just before the oldest kept one.
    retired_through: int = 0
    retired: PackedMap = msgspec.field(default_factory=PackedMap)  # id -> "<attempt>\t<node>" (`lookup` reads it)
    retired_tally: dict[str, Retired] = {}  # "<work type> <config>" -> how many retired, newest completion


def _recounted(counts: dict[str, int], was: WorkStatus | None, now: WorkStatus) -> dict[str, int]:
    """`counts` with one item moved from status `was` (None: a new item) to `now`."""
    # `_value_` is the member's own attribute; `.value` is a property that costs ~5x as much per read.
    counts = dict(counts)
    if was is not None:
        key = was._value_
        counts[key] -= 1
        if not counts[key]:
            del counts[key]  # no zero entries: equal queues have equal counts
    key = now._value_
    counts[key] = counts.get(key, 0) + 1
    return counts


def _stored(state: WorkState, seq: int, before: WorkItem | None, item: WorkItem) -> WorkState:
    counts = state.counts
    if before is None or before.status is not item.status:
        counts = _recounted(counts, None if before is None else before.status, item.status)
    completions = state.completions
    if item.status is C and (before is None or before.status is not C):
        completions = completions.set(seq, item.work_id)
    return msgspec.structs.replace(state, last_seq=seq, items=state.items.set(item.work_id, item), counts=counts,
                                   completions=completions)


def lookup(state: WorkState, work_id: str) -> WorkItem | None:
    """The item, or for a retired one what judges events naming it (a completed item's attempt and node)."""
    item: WorkItem | None = state.items.get(work_id)
    if item is not None:
        return item
    judged_by = state.retired.get(work_id)
    if judged_by is None:
        return None
    attempt, tab, node = judged_by.partition("\t")
    return WorkItem(work_id=work_id, work_type="", board_type="", num_players=0, status=C, attempt=int(attempt),
                    node=node if tab else None)


def work_added(state: WorkState, event: WorkAdded, seq: int) -> WorkState:
    """A new item enters the queue as pending; an id seen before is an anomaly."""
    if event.work_id in state.items or event.work_id in state.retired:
        return rejected(state, seq, event, f"work {event.work_id} was already added")
    item = WorkItem(
        work_id=event.work_id, work_type=event.work_type, board_type=event.board_type,
        num_players=event.num_players, num_games=event.num_games, priority=event.priority,
        added_seq=seq, added_at=event.ts, updated_seq=seq, updated_at=event.ts, trace=event.trace,
        target_node=event.target_node, model_id=str(event.params.get("model_id") or ""),
    )
    return _stored(state, seq, None, item)


def attempt_problem(item: WorkItem, event: Event) -> str | None:
    """Why an event does not belong to the item's current attempt, or None when it does."""
    if isinstance(event, WorkAssigned):
        if event.attempt <= item.attempt:
            return f"attempt {event.attempt} is not newer than attempt {item.attempt}"
        return None
    if item.attempt == 0:
        return None  # never assigned: nothing to be superseded, the transition table judges
    attempt = getattr(event, "attempt", item.attempt)
    node = getattr(event, "node", item.node)
    if attempt != item.attempt or node != item.node:
        return (
            f"from superseded attempt {attempt} on {node} "
            f"(current attempt is {item.attempt} on {item.node or 'no node'})"
        )
    return None


def late_completion(item: WorkItem, event: Event) -> bool:
    """Whether a completion comes from an attempt that already ended and still counts.

    The rule: an attempt handed back or failed (timed out, its node lost) that completes after
    all is accepted while no newer attempt of the item has started and the item was not
    cancelled -- pending, assigned to a newer attempt not yet started, or even given up on.
    Its work is done; running it again would only repeat it.
    """
    return (
        isinstance(event, WorkCompleted)
        and item.status in LATE_COMPLETION_STATES
        and (event.attempt, event.node) in item.ended
    )


def _moved(item: WorkItem, event: Event, status: WorkStatus, seq: int, noted: dict[str, object]) -> WorkItem:
    if type(event) is WorkProgress:  # ~45% of a fleet's events: one replace, no dict of changes
        assert not noted  # a progress report notes nothing of its attempt (see `logged`)
        return msgspec.structs.replace(item, status=status, updated_seq=seq, updated_at=event.ts, unschedulable="",
                                       unschedulable_since=None, progress=event.fraction)
    changes: dict[str, object] = {"status": status, "updated_seq": seq, "updated_at": event.ts,
                                  "unschedulable": "", "unschedulable_since": None}
    if noted:
        changes.update(noted)
    if isinstance(event, WorkUnschedulable):
        changes.update(unschedulable=event.reason, unschedulable_since=item.unschedulable_since or event.ts)
    if isinstance(event, WorkAssigned):
        changes.update(attempt=event.attempt, node=event.node, epoch=event.epoch, progress=None, deadline=event.deadline)
    elif isinstance(event, WorkStarted):  # a newer attempt runs: older ones may no longer complete
        changes.update(ended=tuple(e for e in item.ended if e[0] >= event.attempt))
    elif isinstance(event, WorkCompleted):
        changes.update(progress=1.0, reason="", cause="", node=event.node, ended=())
    if isinstance(event, (WorkAttemptFailed, WorkHandedBack)) and item.status is not WorkStatus.CANCELLED:
        changes.update(ended=(*item.ended, (event.attempt, event.node)))
        if isinstance(event, WorkAttemptFailed):
            outcome = AttemptOutcome(attempt=event.attempt, node=event.node, reason=event.reason)
            changes.update(failures=item.failures + 1, cause=event.cause, outcomes=(*item.outcomes, outcome),
                           failed_at=event.ts)
        else:
            changes.update(handed_back=item.handed_back + 1)
    if isinstance(event, (WorkAttemptFailed, WorkHandedBack, WorkFailed, WorkCancelled)) and item.status is not WorkStatus.CANCELLED:
        changes.update(reason=event.reason)
    return msgspec.structs.replace(item, **changes)


_ATTEMPT_REPORTS: frozenset[type[Event]] = frozenset({WorkStarted, WorkCompleted, WorkAttemptFailed, WorkHandedBack})


def logged(item: WorkItem, event: Event) -> dict[str, object]:
    """What an event says of one attempt (started, ended, completed), to note on the item whether or not it applies."""
    if type(event) not in _ATTEMPT_REPORTS:  # most events (progress, decisions): the cheapest test first
        return {}
    assert isinstance(event, (WorkStarted, WorkCompleted, WorkAttemptFailed, WorkHandedBack))
    pair = (event.attempt, event.node)
    if isinstance(event, WorkStarted):
        return {} if pair in item.started else {"started": (*item.started, pair)}
    changes: dict[str, object] = {}
    if pair not in item.settled:
        changes["settled"] = (*item.settled, pair)
    if isinstance(event, WorkCompleted) and item.completed_by is None:
        changes["completed_by"] = pair
    return changes


def transition(state: WorkState, event: Event, seq: int) -> WorkState:
    """Move an item by the transition table, or record why the event cannot apply to it."""
    fast = FAST_PATHS.get(type(event))
    if fast is not None:
        moved = fast(state, event, seq)
        if moved is not None:
            return moved
    return general_transition(state, event, seq)


def general_transition(state: WorkState, event: Event, seq: int) -> WorkState:
    """`transition` by the table and the attempt rules alone: what every fast path must equal."""
    work_id: str = event.work_id  # type: ignore[attr-defined]  # every event this fold reads names its work item
    item = lookup(state, work_id)
    if item is None:
        return rejected(state, seq, event, f"unknown work item {work_id}")
    noted = logged(item, event)
    if late_completion(item, event):
        return _stored(state, seq, item, _moved(item, event, C, seq, noted))
    problem = attempt_problem(item, event)
    target = _MOVES[item.status._value_].get(type(event))
    if problem is None and target is None:
        problem = f"illegal transition: {event.type_name()} in state {item.status.value}"
    if problem is not None:
        state = rejected(state, seq, event, problem)
        if not noted or work_id not in state.items:  # a retired item keeps only what judges later events
            return state
        return msgspec.structs.replace(state, items=state.items.set(work_id, msgspec.structs.replace(item, **noted)))
    assert target is not None
    return _stored(state, seq, item, _moved(item, event, target, seq, noted))


# ---- the common steps of a healthy item's life, each one replace ----------------------------
# About four events in five of a fleet's log are an item's own attempt reporting in order (a
# progress report ~45%, started, completed). These paths take exactly those, when nothing can
# make them an anomaly, and give None for anything else, which `general_transition` judges;
# tests/test_work_fast.py checks each against it on random logs.


def _reporting(state: WorkState, event: WorkProgress | WorkStarted | WorkCompleted, status: WorkStatus) -> WorkItem | None:
    """The item if it is in `status` and the event comes from its current attempt and node, else None."""
    item: WorkItem | None = state.items.get(event.work_id)
    if item is None or item.status is not status or item.attempt != event.attempt or item.node != event.node:
        return None
    return item


def _progressed(state: WorkState, event: WorkProgress, seq: int) -> WorkState | None:
    item = _reporting(state, event, R)
    if item is None:
        return None
    moved = msgspec.structs.replace(item, updated_seq=seq, updated_at=event.ts, unschedulable="",
                                    unschedulable_since=None, progress=event.fraction)
    return msgspec.structs.replace(state, last_seq=seq, items=state.items.set(item.work_id, moved))


def _started(state: WorkState, event: WorkStarted, seq: int) -> WorkState | None:
    item = _reporting(state, event, A)
    return None if item is None else _moved_on(state, seq, msgspec.structs.replace(
        item, status=R, updated_seq=seq, updated_at=event.ts, unschedulable="", unschedulable_since=None,
        started=_noting(item.started, (event.attempt, event.node)),
        ended=tuple(e for e in item.ended if e[0] >= event.attempt) if item.ended else (),
    ), A)


def _completed(state: WorkState, event: WorkCompleted, seq: int) -> WorkState | None:
    item = _reporting(state, event, R)
    if item is None:
        return None
    pair = (event.attempt, event.node)
    done = msgspec.structs.replace(
        item, status=C, updated_seq=seq, updated_at=event.ts, unschedulable="", unschedulable_since=None,
        settled=_noting(item.settled, pair), completed_by=pair if item.completed_by is None else item.completed_by,
        progress=1.0, reason="", cause="", ended=(),
    )
    return _moved_on(state, seq, done, R, completions=state.completions.set(seq, item.work_id))


def _noting(pairs: tuple[tuple[int, str], ...], pair: tuple[int, str]) -> tuple[tuple[int, str], ...]:
    """`pairs` with `pair` at the end unless it is in already (what `logged` notes)."""
    return pairs if pair in pairs else (*pairs, pair)


def _assigned(state: WorkState, event: WorkAssigned, seq: int) -> WorkState | None:
    item = state.items.get(event.work_id)
    if item is None or item.status is not P or event.attempt <= item.attempt:
        return None
    moved = msgspec.structs.replace(
        item, status=A, updated_seq=seq, updated_at=event.ts, unschedulable="", unschedulable_since=None,
        attempt=event.attempt, node=event.node, epoch=event.epoch, progress=None, deadline=event.deadline,
    )
    return _moved_on(state, seq, moved, P)


def _moved_on(state: WorkState, seq: int, moved: WorkItem, was: WorkStatus, **changes: object) -> WorkState:
    """`state` with `moved` stored, counted out of `was` and into its own status."""
    return msgspec.structs.replace(state, last_seq=seq, items=state.items.set(moved.work_id, moved),
                                   counts=_recounted(state.counts, was, moved.status), **changes)


FAST_PATHS: dict[type[Event], Callable[[WorkState, Any, int], WorkState | None]] = {
    WorkProgress: _progressed, WorkStarted: _started, WorkCompleted: _completed, WorkAssigned: _assigned,
}


@total
def apply(state: WorkState, event: Event, seq: int) -> WorkState:
    """The work queue after one event at stream position `seq`; stale leader decisions are dropped, old completions retire."""
    state = _applied(state, event, seq)
    if seq - state.retire_after <= state.retired_through:  # nothing due: `_retire`'s own first test, without the call
        return state
    return _retire(state, seq)


def retired_due(state: WorkState, seq: int) -> WorkState:
    """`state` with what is due at `seq` retired: what `apply` does after an event's step."""
    if seq - state.retire_after <= state.retired_through:
        return state
    return _retire(state, seq)


def _applied(state: WorkState, event: Event, seq: int) -> WorkState:
    state, goes_on = judged(state, event, seq)
    if not goes_on:
        return state
    if type(event) is WorkAdded:
        return work_added(state, event, seq)
    return transition(state, event, seq)


def step(state: WorkState, event: Event, seq: int) -> WorkState:
    """The work queue after one event of an item, unfenced: `apply` runs it on what its fence admits."""
    if isinstance(event, WorkAdded):
        return work_added(state, event, seq)
    return transition(state, event, seq)


def item_history(work_id: str, history: Iterable[tuple[int, Event]]) -> WorkItem | None:
    """One item as its own events (seq, event) make it, by the same steps as `apply`, or None if never added.

    Unfenced: an item's own subjects hold none of the elections that judge a leader's epoch, so a
    reader of one item (a worker deciding on an assignment it judged with its own fence) takes the
    item's events as the log holds them. Events of other items are skipped; the item's events before
    its WORK_ADDED are refused as about an unknown item, as `apply` refuses them.
    """
    state = WorkState()
    for seq, event in history:
        if type(event) in LIFECYCLE and getattr(event, "work_id", None) == work_id:
            state = step(state, event, seq)
    item: WorkItem | None = state.items.get(work_id)
    return item


def is_open(item: WorkItem | None) -> bool:
    """Whether the item exists and is not yet completed, failed or cancelled."""
    return item is not None and item.status not in TERMINAL


# The maps the bundle's rebuild may hold as plain dicts (projections/dictmap.py, the bundle's open set):
# the fold and its retirement read them by key or `readers`, write them only by `set` and `remove`, and
# never read a map of a state they have already replaced by a write. `retired`, a packed map, opens its
# buckets (written by `packedmap.added` alone, in the retirement).
DICT_MAPS = ("items", "completions", "retired")

# The maps this fold writes on nearly every event, which the scheduler queue's folding holder keeps open
# (projections/openmap.py).
OPEN_MAPS: Spec = {"items": None, "completions": None, "retired": {"buckets": None}}

PROJECTION: Projection[WorkState] = Projection(
    name="work",
    version=VERSION,
    initial=WorkState,
    apply=apply,
    reads=frozenset({LeaderElected.type_name(), LeaseWritten.type_name()} | {t.type_name() for t in LIFECYCLE}),
)
