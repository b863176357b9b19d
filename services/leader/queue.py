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

from eventbus.events import EVENT_TYPES, Event
from projections import cluster, work
from projections.base import Anomaly, Projection, total
from projections.openmap import Opened, Spec
from projections.pmap import PMap
from services.leader import signals

_WORK_READS = work.PROJECTION.reads
_CLUSTER_READS = cluster.PROJECTION.reads
_PENDING, _ASSIGNED, _RUNNING = work.WorkStatus.PENDING, work.WorkStatus.ASSIGNED, work.WorkStatus.RUNNING
# `_node_of` tests these by identity: `in work.ACTIVE` hashes the enum member in Python, twice an event.
assert work.ACTIVE == {_ASSIGNED, _RUNNING}, "services/leader/queue.py: _node_of must follow work.ACTIVE"


class QueueState(msgspec.Struct, frozen=True, kw_only=True):
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
    """The queue after one event at stream position `seq`.

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


def folding(state: QueueState) -> Opened[QueueState]:
    """`state` held open for folding many events (Folder): the same states as `apply`, fewer map copies."""
    return Opened(state, apply, OPEN_MAPS)


PROJECTION: Projection[QueueState] = Projection(
    name="scheduler-queue", version=4, initial=QueueState, apply=apply, reads=frozenset(EVENT_TYPES),
    folding=folding,
)
