"""The chaos nemesis's pure parts: the seeded schedule, shrinking with a fake oracle, recovery times and the timeline."""

from __future__ import annotations

import datetime as dt
from itertools import pairwise
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import RrConfig
from eventbus.events import LeaderElected, LeaderLost, WorkAdded, WorkAssigned, WorkCompleted
from ops.chaos.checker import check
from ops.chaos.report import Injected, percentiles, points, recovery, render_timeline, summary, window
from ops.chaos.run import terminal_ids
from ops.chaos.schedule import (
    KINDS,
    QUORUM_KINDS,
    Fault,
    ScheduleError,
    decode_schedule,
    encode_schedule,
    parse_kinds,
    plan_schedule,
)
from ops.chaos.shrink import shrink
from ops.chaos.workload import work_item
from ops.fleet.files import Workload, rr_config
from ops.fleet.plan import plan_fleet

NATS = ("nats-1", "nats-2", "nats-3")
WORKERS = ("w-1", "w-2", "w-3")


def schedule(seed: int, duration: float = 90.0, kinds: tuple[str, ...] = tuple(KINDS)) -> tuple[Fault, ...]:
    return plan_schedule(seed, duration, kinds, NATS, WORKERS)


def test_a_seed_replays_the_same_schedule_and_another_seed_gives_another() -> None:
    assert schedule(7) == schedule(7)
    assert schedule(7) != schedule(8)
    assert encode_schedule(schedule(7)) == encode_schedule(plan_schedule(7, 90.0, list(KINDS), list(NATS), list(WORKERS)))


def impairs_nats(fault: Fault) -> bool:
    return fault.kind in QUORUM_KINDS or (fault.kind in ("cut_host", "restart_host") and fault.target in NATS)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.floats(20.0, 900.0))
def test_every_fault_ends_within_the_run_and_no_two_take_a_nats_server_away_at_once(seed: int, duration: float) -> None:
    faults = schedule(seed, duration)
    assert faults, "a run longer than its warm-up injects something"
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    for f in faults:
        assert 0 < f.at_s and f.at_s + f.hold_s <= duration + 0.01 and f.hold_s > 0
        assert f.kind in KINDS
    quorum = [f for f in faults if impairs_nats(f)]
    for a, b in pairwise(quorum):
        assert b.at_s >= a.at_s + a.hold_s, f"{a} and {b} overlap: the cluster could lose its quorum"


def test_faults_overlap_and_cover_the_kinds_over_a_long_run() -> None:
    faults = schedule(3, 900.0)
    assert {f.kind for f in faults} == set(KINDS)
    assert any(b.at_s < a.at_s + a.hold_s for a, b in pairwise(faults)), "faults never overlap"


def test_targets_come_from_the_hosts_given_and_a_split_isolates_one_nats_server() -> None:
    faults = plan_schedule(5, 600.0, ("kill_worker", "split", "cut_host"), NATS, ("w-2",))
    assert {f.target for f in faults if f.kind == "kill_worker"} == {"w-2"}
    assert {f.target for f in faults if f.kind == "cut_host"} <= {*NATS, "w-2"}
    for f in (f for f in faults if f.kind == "split"):
        minority, majority = (side.split(",") for side in f.target.split("/"))
        assert len([h for h in minority if h in NATS]) == 1 and len([h for h in majority if h in NATS]) == 2
        assert sorted(minority + majority) == sorted([*NATS, "w-2"])


def test_kinds_are_checked_and_schedules_round_trip_through_json() -> None:
    assert parse_kinds("") == tuple(KINDS)
    assert parse_kinds("kill_leader, split") == ("kill_leader", "split")
    with pytest.raises(ScheduleError, match="unknown kind.*kill_everything.*choose from kill_leader"):
        parse_kinds("kill_leader,kill_everything")
    assert decode_schedule(encode_schedule(schedule(1)), "s.json") == schedule(1)
    with pytest.raises(ScheduleError, match="s.json: .*expected a JSON list"):
        decode_schedule(b'[{"at_s": "soon"}]', "s.json")
    with pytest.raises(ScheduleError, match="s.json: unknown fault kind"):
        decode_schedule(b'[{"at_s": 1, "kind": "meteor", "hold_s": 1}]', "s.json")
    with pytest.raises(ScheduleError, match="--duration 4"):
        schedule(1, 4.0)


def test_shrinking_drops_every_fault_the_violation_does_not_need() -> None:
    faults = schedule(11, 300.0)
    needed = {faults[2], faults[-1]}
    calls: list[int] = []

    def oracle(candidate: tuple[Fault, ...]) -> bool:
        calls.append(len(candidate))
        return needed <= set(candidate)

    shrunk = shrink(faults, oracle, max_runs=10_000)
    assert set(shrunk.faults) == needed and shrunk.minimal
    assert shrunk.runs == len(calls)


def test_shrinking_stops_at_its_budget_with_the_shortest_reproduction_so_far() -> None:
    shrunk = shrink(list(range(10)), lambda c: 9 in c, max_runs=4)
    assert shrunk.faults == (4, 5, 6, 7, 8, 9) and shrunk.runs == 4 and not shrunk.minimal
    assert shrink([1, 2], lambda c: False).faults == (1, 2)  # nothing can be dropped: all of it is needed


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def timeline_log() -> list[tuple[int, object]]:
    return [
        (1, LeaderElected(role="scheduler", node="nats-1", epoch=1, ts=at(0), source="nats-1")),
        (2, WorkAssigned(work_id="a", node="w-1", attempt=1, deadline=at(60), ts=at(1), epoch=1)),
        (3, LeaderLost(role="scheduler", node="nats-1", reason="killed", ts=at(10))),
        (4, LeaderElected(role="scheduler", node="nats-2", epoch=2, ts=at(14), source="nats-2")),
        (5, WorkAssigned(work_id="b", node="w-2", attempt=1, deadline=at(60), ts=at(15), epoch=2)),
        (6, WorkCompleted(work_id="b", node="w-2", attempt=1, ts=at(16))),
        (7, LeaderElected(role="distribution", node="nats-3", epoch=3, ts=at(17), source="nats-3")),
    ]


def fault(kind: str, start: float, end: float, hit_leader: bool = False, error: str = "") -> Injected:
    return Injected(fault=Fault(at_s=start, kind=kind, hold_s=end - start), started=at(start).timestamp(),
                    ended=at(end).timestamp(), victim="nats-1", hit_leader=hit_leader, error=error)


def test_recovery_runs_from_each_fault_to_the_next_assignment_and_from_leader_faults_to_the_next_election() -> None:
    timeline = points(timeline_log())  # type: ignore[arg-type]
    assert [p.type for p in timeline] == ["LEADER_ELECTED", "WORK_ASSIGNED", "LEADER_LOST", "LEADER_ELECTED", "WORK_ASSIGNED",
                                          "WORK_COMPLETED"]  # the distribution role's election is not the scheduler's
    injected = [fault("kill_leader", 9, 9, hit_leader=True), fault("kill_worker", 15.5, 20), fault("cut_host", 2, 5, error="no host")]
    rec = recovery(injected, timeline)
    assert rec.to_assignment == [6.0] and rec.never_assigned == 1  # nothing was assigned after 15.5; the failed one is skipped
    assert rec.to_leader == [5.0] and rec.never_led == 0
    assert percentiles([3.0, 1.0, 2.0, 10.0]) == percentiles([10.0, 2.0, 3.0, 1.0])
    p = percentiles([float(i) for i in range(1, 101)])
    assert (p.p50, p.p99, p.n) == (50.0, 99.0, 100)
    assert percentiles([]).p50 is None


def test_a_window_keeps_who_led_when_it_opened() -> None:
    timeline = points(timeline_log())  # type: ignore[arg-type]
    assert [p.seq for p in window(timeline, at(12).timestamp())] == [1, 3, 4, 5, 6]  # nats-1 was elected, then stepped down
    assert [p.seq for p in window(timeline, at(14.5).timestamp())] == [4, 5, 6]
    assert window(timeline, 0.0) == timeline


def test_the_summary_counts_injected_faults_and_violations_by_kind() -> None:
    log = timeline_log()
    log.append((8, WorkAdded(work_id="c", work_type="synthetic", board_type="hex8", num_players=2, id="client:1")))
    from ops.chaos.checker import ClientRecord
    report = check(log, [ClientRecord(id="client:1", seq=8)])  # type: ignore[arg-type]
    injected = [fault("kill_leader", 9, 9, hit_leader=True), fault("cut_host", 2, 5, error="no host")]
    result = summary(7, 90.0, [f.fault for f in injected], injected, report, points(log))  # type: ignore[arg-type]
    assert result.faults_by_kind["kill_leader"] == 1 and result.faults_by_kind["cut_host"] == 0 and result.faults_not_injected == 1
    assert result.violations_by_kind["unfinished"] == 1 and not result.clean
    assert result.recovery_to_leader_s.p50 == 5.0 and result.seed == 7


def test_the_timeline_draws_a_band_per_fault_leadership_spans_and_event_ticks() -> None:
    timeline = points(timeline_log())  # type: ignore[arg-type]
    page = render_timeline([fault("kill_leader", 9, 12, hit_leader=True), fault("split", 20, 30)], timeline, "seed <7>")
    assert page.startswith("<!doctype html>") and "seed &lt;7&gt;" in page
    assert page.count("<title>kill_leader") == 1 and page.count("<title>split") == 1
    assert page.count("<title>nats-1</title>") == 1 and page.count("<title>nats-2</title>") == 1  # two leadership spans
    assert page.count("WORK_ASSIGNED w-") == 2


def test_the_clients_items_are_synthetic_first_in_line_and_named_by_seed() -> None:
    item = work_item("42-ab", 3, 1.5)
    assert (item.work_id, item.work_type, item.params) == ("chaos-42-ab-3", "synthetic", {"seconds": 1.5})
    assert item.priority is not None and item.priority > 0
    log = [(1, WorkCompleted(work_id="a", node="w", attempt=1)), (2, WorkAssigned(work_id="b", node="w", attempt=1, deadline=T0))]
    assert terminal_ids(log) == {"a"}  # type: ignore[arg-type]


def test_the_fleet_config_runs_the_clients_synthetic_items_on_every_worker_host_and_can_leave_the_populator_off() -> None:
    plan = plan_fleet("ab12", Path("/tmp/fleets/ab12"), workers=2, nat=0, subnet=17)
    config = msgspec.convert(rr_config(plan, plan.host("w-1"), Workload(populator=False)), RrConfig)
    assert config.worker.templates["synthetic"] == "sleep 1.0" and not config.scheduler.populator_enabled
    assert all("synthetic" in config.scheduler.role_work[role] for role in ("training", "selfplay"))
    assert msgspec.convert(rr_config(plan, plan.host("w-1"), Workload()), RrConfig).scheduler.populator_enabled
