"""The scheduler's queue state, pure: what the assigner decides on, folded from the log alone.

It reuses the general folds rather than keeping a second lifecycle: projections/work.py (the
work items' transition table, fencing and superseded-attempt rejection) and
projections/cluster.py (which nodes are alive); an item's target node, deadline and failed
attempts are the work fold's too. On top it keeps:
  - per item, the stream sequence of its newest event, applied or not, which the
    optimistic-concurrency check of the next decision compares against;
  - indexes of the open items (pending; assigned or running, with their node) and each node's
    load, so a round costs what is open, not everything the log ever held.
A rebuild folds from sequence 1; a live follower folds the same records as they come; both give
the same state (tests/test_scheduler_queue.py).
"""

from __future__ import annotations

import functools

import msgspec

from eventbus.events import EVENT_TYPES, Event, WorkCompleted, WorkProgress, WorkStarted
from projections import cluster, fence, work
from projections.base import FOLD_ERRORS, Anomaly, Projection, total
from projections.openmap import Opened, Spec
from projections.pmap import PMap
from projections.reportruns import ReportRuns
from services.leader import signals

_WORK_READS = work.PROJECTION.reads
_CLUSTER_READS = cluster.PROJECTION.reads
_PENDING, _ASSIGNED, _RUNNING = work.WorkStatus.PENDING, work.WorkStatus.ASSIGNED, work.WorkStatus.RUNNING
# `_node_of` tests these by identity: `in work.ACTIVE` hashes the enum member in Python, twice an event.
assert work.ACTIVE == {_ASSIGNED, _RUNNING}, "services/leader/queue.py: _node_of must follow work.ACTIVE"


# gc=False here and on work.WorkItem and work.WorkState: a fold makes three of them an event, and each tracked
# one counts towards the collector's next pass over every young object (a rebuild of 181k events spent ~30% of
# its time collecting). They hold only values and persistent maps, never anything that refers back to them, so
# they cannot be part of a reference cycle, the one thing an untracked object would leak.
class QueueState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Work items, nodes, each item's newest sequence and open-item indexes at stream position `last_seq`."""

    last_seq: int = 0
    work: work.WorkState = msgspec.field(default_factory=work.WorkState)
    cluster: cluster.ClusterState = msgspec.field(default_factory=cluster.ClusterState)
    item_seqs: PMap[str, int] = msgspec.field(default_factory=PMap)  # work id -> its newest event's seq, applied or not
    pending: PMap[str, int] = msgspec.field(default_factory=PMap)  # work id -> its attempts so far
    active: PMap[str, str] = msgspec.field(default_factory=PMap)  # work id -> node of its live attempt
    load: PMap[str, int] = msgspec.field(default_factory=PMap)  # node -> live attempts on it
    facts: signals.SignalFacts = msgspec.field(default_factory=signals.SignalFacts)  # priority inputs per config
    anomalies: tuple[Anomaly, ...] = ()  # events whose application failed (projections.base.total)
    anomaly_count: int = 0


class _Route(msgspec.Struct, frozen=True):
    """Which parts of the queue an event type can touch, worked out once per type rather than per event."""

    cluster: bool  # the cluster fold reads it (any event with an epoch goes there too)
    work: bool  # the work fold reads it
    signals: bool  # the priority facts read it
    item: bool  # it is about a work item: its sequence and the open-item indexes may move


@functools.cache  # one entry per event type: a few dozen
def _route(kind: type[Event]) -> _Route:
    name = kind.type_name()
    return _Route(
        cluster=name in _CLUSTER_READS, work=name in _WORK_READS,
        signals=issubclass(kind, signals.SIGNAL_EVENTS), item=kind.aggregate == "work",
    )


@total
def apply(state: QueueState, event: Event, seq: int) -> QueueState:
    """The queue after one event at stream position `seq`: an item's own report in order by `reported`, else `general_apply`."""
    if type(event) in _REPORTS and event.epoch is None:
        moved = reported(state, event, seq)  # type: ignore[arg-type]
        if moved is not None:
            return moved
    return general_apply(state, event, seq)


def general_apply(state: QueueState, event: Event, seq: int) -> QueueState:
    """`apply` by the cluster, work and signal folds' own steps: what `reported` must equal.

    This fold runs twice per assigned item on the leader's hot path (WORK_ADDED, WORK_ASSIGNED),
    so the state is rebuilt once per event and an index is written only where its value moves.
    """
    route = _route(type(event))
    nodes = state.cluster
    if route.cluster or event.epoch is not None:  # anything else would only move its position
        nodes = cluster.apply(nodes, event, seq)
    facts = signals.apply(state.facts, event) if route.signals else state.facts
    work_id = getattr(event, "work_id", None) if route.item else None
    if not isinstance(work_id, str):
        return msgspec.structs.replace(state, last_seq=seq, cluster=nodes, facts=facts)
    before = state.work.items.get(work_id)
    items = work.apply(state.work, event, seq) if route.work else state.work
    after = items.items.get(work_id)
    pending, active, load = state.pending, state.active, state.load
    # A report that keeps the item's status, attempt and node (progress: most of a log) moves no index.
    if after is not before and (before is None or after is None or after.status is not before.status
                                or after.attempt != before.attempt or after.node != before.node):
        pending, active, load = _indexed(pending, active, load, before, after)
    return msgspec.structs.replace(
        state, last_seq=seq, work=items, cluster=nodes, facts=facts, item_seqs=state.item_seqs.set(work_id, seq),
        pending=pending, active=active, load=load,
    )


# ---- an item's own attempt reporting in order, without the generic steps -------------------------
# Most of a log (a progress report ~45% of a fleet's events, started, completed) is an item's
# current attempt reporting in order. For those the generic step is ~16 calls: the queue's route,
# the work fold's total wrapper, its fence, its dispatch. `reported` takes the work fold's own fast
# path (work.FAST_PATHS) and moves only what such a report can move; anything that fast path
# declines, or a retirement falling due, goes the generic way. tests/test_queue_fast.py checks it
# against `general_apply` on random logs.
_REPORTS: frozenset[type[Event]] = frozenset({WorkProgress, WorkStarted, WorkCompleted})
# Without an epoch these pass every fence and no cluster or signal fold reads them: only the work fold moves.
assert not _REPORTS & fence.FENCED_WITHOUT_EPOCH, "queue.reported must follow the fences"
assert not any(issubclass(t, signals.SIGNAL_EVENTS) for t in _REPORTS), "queue.reported must follow the signal facts"
assert not {t.type_name() for t in _REPORTS} & _CLUSTER_READS, "queue.reported must follow the cluster fold"


def reported(state: QueueState, event: WorkProgress | WorkStarted | WorkCompleted, seq: int) -> QueueState | None:
    """The queue after an epoch-less report of an item's current attempt in order, or None for `general_apply` to judge."""
    works = state.work
    if seq - works.retire_after > works.retired_through:  # a retirement is due: work.apply's own step
        return None
    try:
        moved = work.FAST_PATHS[type(event)](works, event, seq)
    except Exception:  # noqa: BLE001 - the generic step folds it again inside the work fold's total, which records it there
        # It may have written into maps held open (projections/openmap.py): counting it as a fold error makes
        # the holder fold this event again the pure way, from maps it never wrote.
        FOLD_ERRORS[0] += 1
        return None
    if moved is None:
        return None
    active, load = state.active, state.load
    if type(event) is WorkCompleted:  # running -> completed: its attempt leaves the node (started and progress keep it)
        active, load = active.remove(event.work_id), _count(load, event.node, -1)
    return msgspec.structs.replace(state, last_seq=seq, work=moved, item_seqs=state.item_seqs.set(event.work_id, seq),
                                   active=active, load=load)


_Indexes = tuple[PMap[str, int], PMap[str, str], PMap[str, int]]


def _indexed(
    pending: PMap[str, int], active: PMap[str, str], load: PMap[str, int],
    before: work.WorkItem | None, after: work.WorkItem | None,
) -> _Indexes:
    """The open-item indexes (pending, active, load) after one item moved from `before` to `after`."""
    assert after is not None  # an item never leaves the work fold
    work_id = after.work_id
    if after.status is _PENDING:
        # `pending` holds every pending item's attempt: one that stays pending at the same attempt
        # (an unschedulable note) is there already, and a new one cannot be, so no lookup is needed.
        if before is None or before.status is not _PENDING or before.attempt != after.attempt:
            pending = pending.set(work_id, after.attempt)
    elif before is not None and before.status is _PENDING:
        pending = pending.remove(work_id)
    old_node = _node_of(before)
    new_node = _node_of(after)
    if old_node != new_node:  # started, progress and the like keep the node: nothing to write
        if old_node is not None:
            load = _count(load, old_node, -1)
            active = active.remove(work_id)
        if new_node is not None:
            load = _count(load, new_node, +1)
            active = active.set(work_id, new_node)
    return pending, active, load


def _node_of(item: work.WorkItem | None) -> str | None:
    """The node a live attempt of the item holds, if it has one."""
    if item is None:
        return None
    status = item.status
    return item.node if status is _ASSIGNED or status is _RUNNING else None


def _count(load: PMap[str, int], node: str, delta: int) -> PMap[str, int]:
    now = load.get(node, 0) + delta
    return load.set(node, now) if now else load.remove(node)


def expected_seq(state: QueueState, work_id: str) -> int:
    """The item's last stream sequence as this state saw it: the precondition of the next decision on it."""
    seq: int = state.item_seqs.get(work_id, 0)
    return seq


def alive_nodes(state: QueueState) -> frozenset[str]:
    """Nodes the cluster fold holds online."""
    return frozenset(name for name, info in state.cluster.nodes.items() if info.alive)


def offline_seqs(state: QueueState) -> dict[str, int]:
    """Where each node the cluster fold holds offline went offline (its HOST_OFFLINE's sequence)."""
    return {name: info.since_seq for name, info in state.cluster.nodes.items() if not info.alive}


def pending_items(state: QueueState) -> list[work.WorkItem]:
    """Items waiting for an attempt."""
    return [state.work.items[w] for w in state.pending.keys()]


def open_items(state: QueueState) -> list[work.WorkItem]:
    """Items pending or with a live attempt: all that supervision looks at."""
    return pending_items(state) + [state.work.items[w] for w in state.active.keys()]


# For snapshots (servicekit/snapshotting.py): the leader saves its queue now and then, and the next
# leader folds only the tail after it. Bump `version` when QueueState's shape or meaning changes
# (3: the supervision tracks became the work items' own fields and `item_seqs`; 4: the items carry the
# attempts the log says started and ended, work version 6).
# The maps a rebuild writes on nearly every event: held open while many events are folded unread.
OPEN_MAPS: Spec = {"item_seqs": None, "pending": None, "active": None, "load": None, "work": work.OPEN_MAPS}


def folding(state: QueueState) -> ReportRuns[QueueState]:
    """`state` held open for folding many events (Folder): the same states as `apply`, fewer map copies, an attempt's reports in a row as one."""
    held = Opened(state, apply, OPEN_MAPS)
    return ReportRuns(held, lambda: held.peek().work)


PROJECTION: Projection[QueueState] = Projection(
    name="scheduler-queue", version=4, initial=QueueState, apply=apply, reads=frozenset(EVENT_TYPES),
    folding=folding,
)
