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

import msgspec

from eventbus.events import EVENT_TYPES, Event
from projections import cluster, work
from projections.base import Anomaly, Projection, total
from projections.pmap import PMap
from services.leader import signals

_WORK_READS = work.PROJECTION.reads
_CLUSTER_READS = cluster.PROJECTION.reads


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


@total
def apply(state: QueueState, event: Event, seq: int) -> QueueState:
    """The queue after one event at stream position `seq`."""
    kind = event.type_name()
    nodes = state.cluster
    if kind in _CLUSTER_READS or event.epoch is not None:  # anything else would only move its position
        nodes = cluster.apply(nodes, event, seq)
    if signals.SignalFacts.reads(event):
        state = msgspec.structs.replace(state, facts=signals.apply(state.facts, event))
    work_id = getattr(event, "work_id", None)
    if event.aggregate != "work" or not isinstance(work_id, str):
        return msgspec.structs.replace(state, last_seq=seq, cluster=nodes)
    before = state.work.items.get(work_id)
    items = work.apply(state.work, event, seq) if kind in _WORK_READS else state.work
    after = items.items.get(work_id)
    changed = msgspec.structs.replace(state, last_seq=seq, work=items, cluster=nodes,
                                      item_seqs=state.item_seqs.set(work_id, seq))
    return _indexed(changed, before, after) if after is not before else changed


def _indexed(state: QueueState, before: work.WorkItem | None, after: work.WorkItem | None) -> QueueState:
    """The open-item indexes after one item moved from `before` to `after`."""
    pending, active, load = state.pending, state.active, state.load
    old_node = before.node if before is not None and before.status in work.ACTIVE else None
    new_node = after.node if after is not None and after.status in work.ACTIVE else None
    assert after is not None  # an item never leaves the work fold
    if after.status is work.WorkStatus.PENDING:
        pending = pending.set(after.work_id, after.attempt)
    elif before is not None and before.status is work.WorkStatus.PENDING:
        pending = pending.remove(after.work_id)
    if old_node != new_node:
        if old_node is not None:
            load = _count(load, old_node, -1)
            active = active.remove(after.work_id)
        if new_node is not None:
            load = _count(load, new_node, +1)
            active = active.set(after.work_id, new_node)
    return msgspec.structs.replace(state, pending=pending, active=active, load=load)


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
PROJECTION: Projection[QueueState] = Projection(
    name="scheduler-queue", version=4, initial=QueueState, apply=apply, reads=frozenset(EVENT_TYPES),
)
