"""Membership core, pure: beats and silences in, HOST_ONLINE / HOST_OFFLINE out; plain values, no server."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.membership import core
from cluster.membership.core import LEFT, MembershipState, observe, sweep
from eventbus.events import Event, HostOffline, HostOnline, HostResources, LeaderElected
from eventbus.heartbeats import Heartbeat
from tests.terms import in_term

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
SILENCE = 15.0


def beat(node: str = "gpu-1", seq: int = 1, *, at: float = 0.0, started: float = 0.0, leaving: bool = False) -> Heartbeat:
    return Heartbeat(
        node=node, ts=T0 + dt.timedelta(seconds=at), seq=seq, interval_s=5.0, roles=["selfplay"], version="1.2",
        resources=HostResources(cpu_count=8), started=T0 + dt.timedelta(seconds=started), leaving=leaving,
    )


def from_events(events: list[Event], now: float) -> MembershipState:
    """The state a new leader folds from a log its terms wrote (HOST_ONLINE/OFFLINE carry their epoch)."""
    return core.from_events(in_term(events), now=now)


def kinds(events: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.type_name(), e.node, e.reason) for e in events]


def test_a_first_beat_brings_a_node_online_with_what_it_reported() -> None:
    state, events = observe(MembershipState(), beat(), now=100.0)
    assert kinds(events) == [("HOST_ONLINE", "gpu-1", "first_seen")]
    online = events[0]
    assert isinstance(online, HostOnline)
    assert (online.roles, online.version, online.resources) == (["selfplay"], "1.2", HostResources(cpu_count=8))
    assert online.epoch is None  # the shell sets the leader's epoch
    assert state.alive() == {"gpu-1"}


def test_further_beats_of_an_alive_node_say_nothing() -> None:
    state, _ = observe(MembershipState(), beat(seq=1), now=100.0)
    state, events = observe(state, beat(seq=2, at=5), now=105.0)
    assert events == []
    assert state.nodes["gpu-1"].last_beat == 105.0


def test_silence_past_the_limit_takes_a_node_offline_once_with_how_long_it_was_silent() -> None:
    state, _ = observe(MembershipState(), beat(), now=100.0)
    assert sweep(state, now=115.0, silence_s=SILENCE) == (state, [])  # exactly at the limit: not yet
    state, events = sweep(state, now=116.25, silence_s=SILENCE)
    assert kinds(events) == [("HOST_OFFLINE", "gpu-1", "no heartbeat for 16.2s (limit 15s)")]
    offline = events[0]
    assert isinstance(offline, HostOffline)
    assert (offline.silence_s, offline.last_seen) == (16.25, T0)
    assert state.alive() == set()
    assert sweep(state, now=200.0, silence_s=SILENCE) == (state, [])


def test_a_node_that_beats_again_after_going_offline_has_recovered() -> None:
    state, _ = observe(MembershipState(), beat(seq=1), now=100.0)
    state, _ = sweep(state, now=120.0, silence_s=SILENCE)
    state, events = observe(state, beat(seq=2, at=30), now=130.0)
    assert kinds(events) == [("HOST_ONLINE", "gpu-1", "recovered")]


def test_a_leaving_beat_takes_the_node_offline_at_once_and_a_restart_brings_it_back() -> None:
    state, _ = observe(MembershipState(), beat(seq=1), now=100.0)
    state, events = observe(state, beat(seq=2, at=1, leaving=True), now=101.0)
    assert kinds(events) == [("HOST_OFFLINE", "gpu-1", LEFT)]
    assert sweep(state, now=500.0, silence_s=SILENCE)[1] == []
    state, events = observe(state, beat(seq=1, at=60, started=59), now=160.0)  # a new agent process
    assert kinds(events) == [("HOST_ONLINE", "gpu-1", "recovered")]


def test_an_older_or_repeated_beat_is_ignored_even_when_the_agents_clock_steps_back() -> None:
    state, _ = observe(MembershipState(), beat(seq=5, at=20), now=100.0)
    assert observe(state, beat(seq=5, at=20), now=101.0) == (state, [])
    assert observe(state, beat(seq=4, at=15), now=101.0) == (state, [])
    stepped_back, events = observe(state, beat(seq=6, at=-300), now=105.0)  # NTP stepped the clock back
    assert events == [] and stepped_back.nodes["gpu-1"].last_beat == 105.0


def test_a_stale_stored_beat_does_not_bring_a_node_online_but_dates_its_last_beat() -> None:
    state, events = observe(MembershipState(), beat(), now=1000.0, age_s=600.0, silence_s=SILENCE)
    assert events == [] and state.alive() == set()
    # A node the log says is alive, whose newest stored beat is old (the cluster was down, or
    # restarting): a new leader listens for the full window itself before declaring it offline.
    state = from_events([HostOnline(node="gpu-1")], now=1000.0)
    state, _ = observe(state, beat(), now=1000.0, age_s=600.0, silence_s=SILENCE)
    assert sweep(state, now=1000.5, silence_s=SILENCE, listening_since=1000.0)[1] == []
    assert sweep(state, now=1015.0, silence_s=SILENCE, listening_since=1000.0)[1] == []
    # ... and a beat within the window keeps it online: a restart is no HOST_OFFLINE
    fresh, events = observe(state, beat(seq=2), now=1010.0)
    assert events == [] and sweep(fresh, now=1020.0, silence_s=SILENCE, listening_since=1000.0)[1] == []
    assert kinds(sweep(state, now=1015.5, silence_s=SILENCE, listening_since=1000.0)[1]) == [
        ("HOST_OFFLINE", "gpu-1", "no heartbeat for 615.5s (limit 15s)")]


def test_a_stored_goodbye_read_by_a_new_leader_is_no_offline_when_the_node_beats_again_in_the_window() -> None:
    # `rr up` stopped (the agent said goodbye, the leader stopped before hearing it) and started again.
    state = from_events([HostOnline(node="gpu-1")], now=1000.0)
    state, events = observe(state, beat(seq=9, at=0, leaving=True), now=1000.0, age_s=2.0, silence_s=SILENCE, stored=True)
    assert events == [] and state.alive() == {"gpu-1"}
    state, events = observe(state, beat(seq=1, at=3, started=2.5), now=1001.0)  # the new agent's first beat
    assert events == [] and sweep(state, now=1015.5, silence_s=SILENCE, listening_since=1000.0)[1] == []
    # a node that does not come back is declared offline once the new leader has listened the full window
    gone, _ = observe(from_events([HostOnline(node="gpu-1")], now=1000.0), beat(seq=9, leaving=True), now=1000.0,
                      age_s=2.0, silence_s=SILENCE, stored=True)
    assert kinds(sweep(gone, now=1016.0, silence_s=SILENCE, listening_since=1000.0)[1])[0][:2] == ("HOST_OFFLINE", "gpu-1")


def test_a_new_leader_starts_from_the_log_and_does_not_announce_known_nodes_again() -> None:
    log: list[Event] = [
        HostOnline(node="a"), HostOnline(node="b"), HostOffline(node="b", reason="no heartbeat"), HostOnline(node="c"),
        HostOffline(node="c", reason=LEFT),
    ]
    state = from_events(log, now=50.0)
    assert state.alive() == {"a"}
    for node in ("a", "b", "c", "d"):
        state, events = observe(state, beat(node), now=51.0)
        expected = {"a": [], "b": [("HOST_ONLINE", "b", "recovered")], "c": [("HOST_ONLINE", "c", "recovered")],
                    "d": [("HOST_ONLINE", "d", "first_seen")]}[node]
        assert kinds(events) == expected


def test_a_node_alive_in_the_log_that_never_beats_again_gets_a_full_silence_from_the_leaders_start() -> None:
    state = from_events([HostOnline(node="a")], now=50.0)
    assert sweep(state, now=64.0, silence_s=SILENCE)[1] == []
    assert kinds(sweep(state, now=66.0, silence_s=SILENCE)[1]) == [("HOST_OFFLINE", "a", "no heartbeat for 16.0s (limit 15s)")]


def test_a_superseded_leaders_decisions_are_ignored_when_rebuilding_as_the_projections_ignore_them() -> None:
    log: list[Event] = [
        LeaderElected(role="scheduler", node="n1", epoch=3), HostOnline(node="a", epoch=3),
        LeaderElected(role="scheduler", node="n2", epoch=7), HostOffline(node="a", reason="x", epoch=3),  # stale
    ]
    assert from_events(log, now=0.0).alive() == {"a"}


# ---- property: transitions alternate per node, starting with HOST_ONLINE, across leader changes ----

NODES = ("a", "b", "c")
Step = tuple[str, str, float, float]  # (what, node, time step, age of the beat)

steps = st.lists(
    st.tuples(
        st.sampled_from(("beat", "beat", "leave", "stored", "sweep", "failover")),
        st.sampled_from(NODES),
        st.floats(min_value=0.0, max_value=20.0),
        st.floats(min_value=0.0, max_value=60.0),
    ),
    max_size=80,
)


def run_steps(plan: list[Step]) -> list[Event]:
    state, log, now, seq = MembershipState(), [], 0.0, {n: 0 for n in NODES}
    for what, node, dt_s, age in plan:
        now += dt_s
        if what == "sweep":
            state, events = sweep(state, now, SILENCE)
        elif what == "failover":
            state, events = from_events(log, now), []
        else:
            seq[node] += 1
            b = beat(node, seq[node], at=now, leaving=what == "leave")
            stored_age = age if what == "stored" else 0.0
            state, events = observe(state, b, now, age_s=stored_age, silence_s=SILENCE)
        log.extend(events)
    return log


@settings(max_examples=300, deadline=None)
@given(steps)
def test_transitions_alternate_per_node_and_start_with_host_online(plan: list[Step]) -> None:
    log = run_steps(plan)
    for node in NODES:
        types = [e.type_name() for e in log if e.node == node]
        assert types[::2] == ["HOST_ONLINE"] * len(types[::2])
        assert types[1::2] == ["HOST_OFFLINE"] * len(types[1::2])


@settings(max_examples=200, deadline=None)
@given(steps)
def test_after_a_sweep_no_alive_node_has_been_silent_past_the_limit(plan: list[Step]) -> None:
    state, now, seq = MembershipState(), 0.0, 0
    for what, node, dt_s, _age in plan:
        now += dt_s
        seq += 1
        state = observe(state, beat(node, seq, at=now, leaving=what == "leave"), now)[0] if what != "sweep" else state
        state, _ = sweep(state, now, SILENCE)
        for name, liveness in state.nodes.items():
            assert not liveness.alive or now - (liveness.last_beat or now) <= SILENCE, name
