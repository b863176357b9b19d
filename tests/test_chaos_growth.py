"""What the soak measures, pure: growth per hour of a process's memory and descriptors, and availability."""

from __future__ import annotations

from ops.chaos.growth import ProcessSample, availability, led_at, process_growth, slope_per_hour, worst
from ops.chaos.report import Point


def sample(t: float, pid: int, mib: float, fds: int = 10, name: str = "scheduler") -> ProcessSample:
    return ProcessSample(t=t, host="nats-1", name=name, pid=pid, rss_bytes=int(mib * 2**20), fds=fds)


def test_slope_is_per_hour_and_flat_or_single_points_are_zero() -> None:
    assert slope_per_hour([(0.0, 100.0), (1800.0, 105.0), (3600.0, 110.0)]) == 10.0
    assert slope_per_hour([(0.0, 5.0)]) == 0.0 and slope_per_hour([(7.0, 1.0), (7.0, 9.0)]) == 0.0


def test_a_process_is_judged_on_its_longest_lived_pid_and_jobs_are_left_out() -> None:
    samples = [sample(0, 11, 100, 10), sample(600, 11, 101, 11),  # killed by a fault after 10 minutes
               sample(700, 12, 80, 10), sample(2500, 12, 80.5, 10), sample(4300, 12, 81, 10),  # its restart, watched longer
               sample(0, 99, 500, name="job:selfplay"), sample(3600, 99, 900, name="job:selfplay")]
    growth = process_growth(samples)
    assert list(growth) == ["nats-1/scheduler"]
    g = growth["nats-1/scheduler"]
    assert (g.watched_s, g.rss_mib_last, g.fds_per_h) == (3600.0, 81.0, 0.0) and abs(g.rss_mib_per_h - 1.0) < 0.01
    assert list(worst({**growth, "w-1/worker": g.__class__(rss_mib_per_h=5, fds_per_h=0, watched_s=1, rss_mib_last=1)}, 1)) == ["w-1/worker"]


def test_the_fleet_is_available_when_a_leader_is_in_office_and_assignments_flow() -> None:
    timeline = [Point(t=0, seq=1, type="LEADER_ELECTED", node="n1"), Point(t=5, seq=2, type="WORK_ASSIGNED", node="w"),
                Point(t=50, seq=3, type="LEADER_LOST", node="n1"), Point(t=58, seq=4, type="WORK_ASSIGNED", node="w"),
                Point(t=70, seq=5, type="LEADER_ELECTED", node="n2"), Point(t=75, seq=6, type="WORK_ASSIGNED", node="w")]
    assert led_at(10, timeline) and not led_at(60, timeline) and led_at(80, timeline)
    # at 10: led, assigned at 5 | at 40: led, nothing in 30 s | at 60: no leader | at 80: led, assigned at 75
    assert availability([10, 40, 60, 80], timeline, 30.0) == 0.5
    assert availability([], timeline, 30.0) == 0.0
