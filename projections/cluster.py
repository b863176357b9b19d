"""The cluster as the log tells it: the leader of each role, and which nodes are alive with what."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import msgspec

from eventbus.events import Event, HostOffline, HostOnline, HostResources, LeaderElected, LeaderLost, LeaseWritten
from projections.base import Anomaly, Projection, rejected, total
from projections.fence import Fence, screen

VERSION = 2  # 2: elections believed only from candidates announcing their own win; epoch-less decisions dropped


class LeaderInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Who leads a role now (node None: nobody since `since`), at which epoch."""

    role: str
    node: str | None
    epoch: int | None = None
    since: dt.datetime | None = None
    since_seq: int = 0
    reason: str = ""  # why the role has no leader, when it has none


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One node: alive or not since its last transition, and what it reported when it came online."""

    node: str
    alive: bool
    roles: tuple[str, ...] = ()
    version: str = ""
    resources: HostResources | None = None
    since: dt.datetime | None = None  # time of the last transition (online or offline)
    since_seq: int = 0
    reason: str = ""  # reason of the last transition
    last_seen: dt.datetime | None = None  # as the offline detector last saw it
    silence_s: float = 0.0
    offline_count: int = 0  # how often it went offline: a flapping node shows here


class ClusterState(msgspec.Struct, frozen=True, kw_only=True):
    """Leaders per role and nodes by id, at stream position `last_seq`."""

    last_seq: int = 0
    leaders: dict[str, LeaderInfo] = {}
    nodes: dict[str, NodeInfo] = {}
    fence: Fence = msgspec.field(default_factory=Fence)
    anomalies: tuple[Anomaly, ...] = ()
    anomaly_count: int = 0


def alive_peers(state: ClusterState) -> int:
    """How many nodes are alive (the seeds' /status `alive_peers`)."""
    return sum(1 for n in state.nodes.values() if n.alive)


def leader_elected(state: ClusterState, event: LeaderElected, seq: int) -> ClusterState:
    """A role has a new leader (an election older than the role's newest epoch was fenced out before)."""
    current = state.leaders.get(event.role)
    if current is not None and (current.node, current.epoch) == (event.node, event.epoch):
        return msgspec.structs.replace(state, last_seq=seq)  # the same term announced again
    leader = LeaderInfo(role=event.role, node=event.node, epoch=event.epoch, since=event.ts, since_seq=seq)
    return msgspec.structs.replace(state, last_seq=seq, leaders={**state.leaders, event.role: leader})


def leader_lost(state: ClusterState, event: LeaderLost, seq: int) -> ClusterState:
    """The role's leader stopped; a loss reported by an already superseded leader changes nothing."""
    current = state.leaders.get(event.role)
    other_term = event.epoch is not None and current is not None and current.epoch not in (None, event.epoch)
    if current is None or current.node != event.node or other_term:
        return msgspec.structs.replace(state, last_seq=seq)
    vacant = LeaderInfo(
        role=event.role, node=None, epoch=current.epoch, since=event.ts, since_seq=seq,
        reason=f"{event.node} lost it: {event.reason}",
    )
    return msgspec.structs.replace(state, last_seq=seq, leaders={**state.leaders, event.role: vacant})


def host_online(state: ClusterState, event: HostOnline, seq: int) -> ClusterState:
    """A node came (back) online, with the roles, version and resources it reported."""
    before = state.nodes.get(event.node)
    node = NodeInfo(
        node=event.node, alive=True, roles=tuple(event.roles), version=event.version, resources=event.resources,
        since=event.ts if before is None or not before.alive else before.since,
        since_seq=seq if before is None or not before.alive else before.since_seq,
        reason=event.reason, offline_count=0 if before is None else before.offline_count,
    )
    return msgspec.structs.replace(state, last_seq=seq, nodes={**state.nodes, event.node: node})


def host_offline(state: ClusterState, event: HostOffline, seq: int) -> ClusterState:
    """A node went offline; for one never seen, or already offline, that is an anomaly."""
    before = state.nodes.get(event.node)
    if before is None:
        return rejected(state, seq, event, f"node {event.node} went offline without ever being online")
    if not before.alive:
        return rejected(state, seq, event, f"node {event.node} is already offline since seq {before.since_seq}")
    node = msgspec.structs.replace(
        before, alive=False, since=event.ts, since_seq=seq, reason=event.reason,
        last_seen=event.last_seen, silence_s=event.silence_s, offline_count=before.offline_count + 1,
    )
    return msgspec.structs.replace(state, last_seq=seq, nodes={**state.nodes, event.node: node})


# Each handler takes the one event type it is keyed by.
_HANDLERS: dict[type[Event], Callable[[ClusterState, Any, int], ClusterState]] = {
    LeaderElected: leader_elected,
    LeaderLost: leader_lost,
    HostOnline: host_online,
    HostOffline: host_offline,
}


@total
def apply(state: ClusterState, event: Event, seq: int) -> ClusterState:
    """The cluster after one event at stream position `seq`; stale elections and decisions are dropped."""
    state, admitted = screen(state, event, seq)
    if not admitted:
        return state
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return msgspec.structs.replace(state, last_seq=seq)
    return handler(state, event, seq)


PROJECTION: Projection[ClusterState] = Projection(
    name="cluster",
    version=VERSION,
    initial=ClusterState,
    apply=apply,
    reads=frozenset({LeaseWritten.type_name(), *(t.type_name() for t in _HANDLERS)}),  # copies teach the fence
)
