"""The smoke profile's schedule (ops/chaos/smoke.py), pure: every kind once, the quorum rule kept, the leader's faults one at a time."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops.chaos.cli import run_duration
from ops.chaos.schedule import KINDS, Fault, ScheduleError, impairs_nats, plan_schedule
from ops.chaos.smoke import FOLLOWER_KINDS, LOOKUP_S, SmokePacing, plan_smoke, window_s

NATS = ("nats-1", "nats-2", "nats-3")
WORKERS = ("w-1", "w-2", "w-3")
FLEET = SmokePacing(lease_ttl_s=20.0, renew_every_s=4.0)  # ops/fleet/files.py: ttl_s 20, renew_every 0.2


def smoke(seed: int, kinds: tuple[str, ...] = tuple(KINDS), workers: tuple[str, ...] = WORKERS,
          pacing: SmokePacing = FLEET) -> dict[str, Fault]:
    faults = plan_smoke(seed, kinds, NATS, workers, pacing)
    assert len({f.kind for f in faults}) == len(faults), f"a kind planned twice: {faults}"
    return {f.kind: f for f in faults}


def end(fault: Fault) -> float:
    return fault.at_s + fault.hold_s


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.integers(1, 3))
def test_every_kind_is_planned_once_within_the_window_and_never_two_nats_servers_at_once(seed: int, n_workers: int) -> None:
    plan = smoke(seed, workers=WORKERS[:n_workers])
    assert set(plan) == set(KINDS)
    faults = sorted(plan.values(), key=lambda f: f.at_s)
    assert all(f.at_s >= FLEET.warmup_s and f.hold_s >= 0 and end(f) <= window_s(faults) for f in faults)
    assert {f.target for f in faults if f.kind in ("kill_worker", "stop_worker")} <= set(WORKERS[:n_workers])
    quorum = [f for f in faults if impairs_nats(f.kind, f.target, NATS)]
    for a, b in pairwise(quorum):
        assert b.at_s >= end(a) + 1.0 - 0.01, f"{a} and {b} overlap: the cluster could lose its quorum"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9))
def test_the_leaders_stop_outlasts_its_lease_and_each_leader_fault_waits_for_the_last_ones_successor(seed: int) -> None:
    plan = smoke(seed)
    stop, isolate, kill = plan["stop_leader"], plan["isolate_leader"], plan["kill_leader"]
    assert stop.hold_s > FLEET.lease_ttl_s, "a stop within the TTL only pauses the leader: no successor is elected"
    assert isolate.at_s >= end(stop) and kill.at_s >= end(isolate) + 1.0 - 0.01
    assert kill.hold_s == 0.0  # its host's service manager restarts it; its lease runs out over the drain
    lease_holds_until = stop.at_s + FLEET.lease_ttl_s - FLEET.renew_every_s
    for kind in FOLLOWER_KINDS:  # "a follower" is one of the same two hosts while the stopped leader holds its lease
        assert stop.at_s <= plan[kind].at_s and end(plan[kind]) <= lease_holds_until
    lookups = [f for f in plan.values() if f.kind in (*FOLLOWER_KINDS, "stop_leader", "isolate_leader", "kill_leader")]
    for f in plan.values():
        if impairs_nats(f.kind, f.target, NATS) and f.kind not in ("isolate_leader", "kill_stream_leader"):
            assert f.at_s >= end(stop) + 1.0 - 0.01, f"{f} hits a successor candidate's host during the stop"
            assert end(f) + 1.0 <= kill.at_s + FLEET.lease_ttl_s / 2 + 0.01 or f.at_s >= kill.at_s + FLEET.lease_ttl_s + FLEET.election_s, \
                f"{f} delays the election after the kill"
            assert not [g for g in lookups if f.at_s - 1.0 < g.at_s + LOOKUP_S - 0.01 and g.at_s < end(f) + 1.0 - 0.01], f"{f} hinders a leader lookup"
    assert {plan[k].target for k in ("cut_host", "restart_host")} <= set(WORKERS), "a host fault on a NATS host takes a quorum slot"

def test_one_nats_fault_takes_its_server_away_over_the_stopped_leaders_lease_expiry() -> None:
    # The successor campaigns while RR_EVENTS' leader is down: its source of the lease bucket must resume
    # (eventbus/sourcestall.py) for the election to be copied into the log.
    for seed in (17, *range(50)):
        plan = smoke(seed)
        stop, kill = plan["stop_leader"], plan["kill_stream_leader"]
        in_stop = [f for f in plan.values() if impairs_nats(f.kind, f.target, NATS) and f.kind != "isolate_leader"
                   and f.at_s < end(stop) and end(f) > stop.at_s]
        assert in_stop == [kill], f"seed {seed}: {in_stop} in the stop's lease wait"
        expiry = stop.at_s + FLEET.lease_ttl_s  # renewed last just before the stop: the successor campaigns from here
        assert stop.at_s + LOOKUP_S <= kill.at_s < expiry <= end(kill), f"seed {seed}: {kill} is not away over {expiry}"
        assert end(kill) + FLEET.nats_election_s <= end(stop) + 0.01, "the leader wakes before the successor is elected"
    without = smoke(17, kinds=tuple(k for k in KINDS if k != "kill_stream_leader"))
    assert without["kill_nats"].at_s < end(without["stop_leader"]), "another NATS fault takes the stop's slot"
    alone = smoke(17, kinds=("stop_leader", "isolate_leader"))  # no NATS fault: the stop waits for no raft election
    assert alone["stop_leader"].hold_s == FLEET.lease_ttl_s + FLEET.election_s


def test_the_window_is_about_the_leaders_lane_and_a_seed_replays_it() -> None:
    assert plan_smoke(17, tuple(KINDS), NATS, WORKERS, FLEET) == plan_smoke(17, list(KINDS), list(NATS), list(WORKERS), FLEET)
    assert plan_smoke(17, tuple(KINDS), NATS, WORKERS, FLEET) != plan_smoke(18, tuple(KINDS), NATS, WORKERS, FLEET)
    # stop (TTL + election + the NATS fault's election), isolate (<= 5 s), 1 s to the kill, then a NATS fault after its successor
    for seed in range(200):
        plan = smoke(seed)
        assert plan["kill_leader"].at_s <= FLEET.warmup_s + FLEET.lease_ttl_s + FLEET.election_s + FLEET.nats_election_s + 5.0 + 1.0 + 0.01
        assert window_s(tuple(plan.values())) <= plan["kill_leader"].at_s + FLEET.lease_ttl_s + FLEET.election_s + 2 * 6.0
    shorter = SmokePacing(lease_ttl_s=10.0, renew_every_s=2.0)
    assert smoke(17, pacing=shorter)["kill_leader"].at_s == smoke(17)["kill_leader"].at_s - 10.0  # the lane follows the lease


def test_a_subset_of_kinds_plans_only_those_and_followers_start_at_once_without_a_stopped_leader() -> None:
    plan = smoke(3, kinds=("kill_follower", "stop_follower", "kill_worker"))
    assert set(plan) == {"kill_follower", "stop_follower", "kill_worker"}
    assert min(f.at_s for f in plan.values()) <= FLEET.warmup_s + 2.5


def test_a_plan_that_cannot_be_made_names_what_to_change() -> None:
    with pytest.raises(ScheduleError, match="no host for split"):
        plan_smoke(1, ("split",), ("nats-1", "nats-2"), WORKERS, FLEET)
    with pytest.raises(ScheduleError, match="no host for kill_worker"):
        plan_smoke(1, ("kill_worker",), NATS, (), FLEET)
    with pytest.raises(ScheduleError, match="lease TTL 4"):
        plan_smoke(1, ("stop_leader", "stop_follower"), NATS, WORKERS, SmokePacing(lease_ttl_s=4.0, renew_every_s=1.0))


def test_the_default_mix_a_user_gets_is_unchanged() -> None:
    # Seed 17's 90 s as `python -m ops.chaos --seed 17` planned it before the smoke profile existed.
    faults = plan_schedule(17, 90.0, tuple(KINDS), NATS, WORKERS)
    assert [(f.at_s, f.kind) for f in faults] == [
        (5.0, "cut_host"), (16.52, "kill_leader"), (24.89, "kill_follower"), (29.5, "stop_follower"), (37.16, "kill_distributor"),
        (44.84, "kill_distributor"), (52.41, "kill_stream_leader"), (59.3, "stop_follower"), (63.4, "stop_leader"),
        (68.61, "isolate_leader"), (74.01, "kill_worker"), (80.83, "stop_leader")]


def test_a_smoke_runs_for_its_plans_window_unless_given_a_longer_one() -> None:
    plan = tuple(smoke(17).values())
    assert run_duration(None, True, plan) == window_s(plan) and run_duration(None, False, plan) == 90.0
    assert run_duration(120.0, True, plan) == 120.0
    with pytest.raises(ScheduleError, match="--duration 30: the smoke plan's faults run until"):
        run_duration(30.0, True, plan)
