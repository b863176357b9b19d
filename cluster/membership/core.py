"""Membership, pure: from heartbeats and the leader's clock, which nodes came online and which fell silent.

Times are the leader's monotonic clock (when it received a beat), never the agents' clocks,
so a node with a skewed clock is judged like any other. A node's transitions always
alternate HOST_ONLINE, HOST_OFFLINE, HOST_ONLINE ... starting with HOST_ONLINE; a new leader
starts from the log's last word on each node (`from_events`) so it never announces again
what its predecessor already did.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

import msgspec

from eventbus.events import Event, HostOffline, HostOnline
from eventbus.heartbeats import Heartbeat
from projections.fencing import EpochFence
from projections.pmap import PMap

LEFT = "left"  # HOST_OFFLINE reason of a node whose agent said goodbye
FIRST_SEEN = "first_seen"
RECOVERED = "recovered"

# Orders the beats of one node: agent process start, then the beat's number in that process.
# An agent's own clock may step back (NTP); its counter never does.
BeatKey = tuple[dt.datetime, int]


class NodeLiveness(msgspec.Struct, frozen=True, kw_only=True):
    """What the leader knows of one node: alive or not, and when it last heard from it."""

    alive: bool
    last_beat: float | None = None  # leader's monotonic time of the newest beat (or of the grace start)
    last_key: BeatKey | None = None  # which beat that was; older ones are ignored
    last_seen: dt.datetime | None = None  # that beat's own timestamp, for HOST_OFFLINE.last_seen


class MembershipState(msgspec.Struct, frozen=True, kw_only=True):
    """Every node the leader knows of, by id."""

    nodes: PMap[str, NodeLiveness] = msgspec.field(default_factory=PMap)

    def alive(self) -> set[str]:
        """Ids of the nodes alive now."""
        return {name for name, node in self.nodes.items() if node.alive}


def beat_key(beat: Heartbeat) -> BeatKey:
    """The order of a beat among its node's beats."""
    started = beat.started or beat.ts  # an agent that does not say when it started: its beat time
    return (started, beat.seq)


def from_events(events: Iterable[Event], now: float) -> MembershipState:
    """The alive/offline set the log's HOST_ONLINE/HOST_OFFLINE leave, in log order, fenced as the projections are.

    A node alive in the log gets a full silence from `now` to beat before it is declared offline.
    """
    fence = EpochFence()
    alive: dict[str, bool] = {}
    for event in events:
        if not fence.admit(event):
            continue  # a superseded leader's decision, as projections/cluster.py drops it
        if isinstance(event, HostOnline):
            alive[event.node] = True
        elif isinstance(event, HostOffline):
            alive[event.node] = False
    nodes = {name: NodeLiveness(alive=a, last_beat=now if a else None) for name, a in alive.items()}
    return MembershipState(nodes=PMap(nodes))


def observe(
    state: MembershipState, beat: Heartbeat, now: float, *, age_s: float = 0.0, silence_s: float = math.inf,
    stored: bool = False,
) -> tuple[MembershipState, list[Event]]:
    """The state after one beat received at `now` (sent `age_s` earlier), and the transition it causes.

    A beat older than `silence_s` (a stored one read at start) updates what is known of the
    node but never brings it online; a beat older than one already seen is ignored. A stored
    goodbye (`stored`: read at the leader's start, not heard live) does not take the node
    offline: it may be the last word of a process that is already starting again (a restart of
    `rr up`), so the node gets the new leader's full silence window instead.
    """
    node = state.nodes.get(beat.node)
    key = beat_key(beat)
    if node is not None and node.last_key is not None and key <= node.last_key:
        return state, []
    received = now - max(0.0, age_s)
    was_alive = node is not None and node.alive
    events: list[Event]
    if beat.leaving and stored:
        alive, events = was_alive, []
    elif beat.leaving:
        alive, events = False, ([_left(beat)] if was_alive else [])
    elif was_alive:
        alive, events = True, []
    elif age_s <= silence_s:
        alive, events = True, [_online(beat, FIRST_SEEN if node is None else RECOVERED)]
    else:
        alive, events = False, []
    updated = NodeLiveness(alive=alive, last_beat=received, last_key=key, last_seen=beat.ts)
    return MembershipState(nodes=state.nodes.set(beat.node, updated)), events


def sweep(
    state: MembershipState, now: float, silence_s: float, listening_since: float = -math.inf
) -> tuple[MembershipState, list[Event]]:
    """The state after declaring offline every alive node silent for more than `silence_s` at `now`.

    Silence counts only from `listening_since` (when this leader began to follow beats): a new
    leader declares nobody offline before it has itself listened for the full window, however
    old the last beat it found stored is (the whole cluster may just have restarted).
    """
    cutoff = now - silence_s  # a node whose newest beat is older than this is silent
    if listening_since >= cutoff:
        return state, []  # this leader has not listened for a full window yet: nobody is judged
    nodes = state.nodes
    events: list[Event] = []
    # Called every sweep_every_s over every node (10,000 at fleet scale): one comparison per node.
    for name, node in state.nodes.items():
        last = node.last_beat
        if last is not None and last < cutoff and node.alive:
            events.append(_silent(name, node, now - last, silence_s))
            nodes = nodes.set(name, msgspec.structs.replace(node, alive=False))
    if not events:
        return state, events
    return MembershipState(nodes=nodes), events


def _online(beat: Heartbeat, reason: str) -> HostOnline:
    return HostOnline(node=beat.node, reason=reason, roles=list(beat.roles), version=beat.version, resources=beat.resources)


def _left(beat: Heartbeat) -> HostOffline:
    return HostOffline(node=beat.node, reason=LEFT, last_seen=beat.ts, silence_s=0.0)


def _silent(name: str, node: NodeLiveness, silence: float, limit: float) -> HostOffline:
    return HostOffline(
        node=name,
        reason=f"no heartbeat for {silence:.1f}s (limit {limit:g}s)",
        last_seen=node.last_seen,
        silence_s=round(silence, 3),
    )
