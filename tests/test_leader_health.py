"""A leader whose loops are not all running reads as unhealthy in `rr leader` and `rr doctor` (pure views)."""

from __future__ import annotations

import datetime as dt

from eventbus.events import LeaderElected
from eventbus.leases import LeaseRecord, LeaseValue
from services.doctor.checks import check_leader
from services.doctor.findings import LeaderProbe
from services.leadership.election import loop_summary
from services.leadership.status import format_table, leader_view
from services.leadership.supervisor import LoopHealth, LoopState

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def record(loops: dict[str, str]) -> LeaseRecord:
    holder = LeaseValue(node="c3", incarnation="x", epoch=411, ttl_s=3, acquired_at=T0, loops=loops)
    return LeaseRecord(role="scheduler", revision=411, state="held", holder=holder, written_at=T0)


def elected() -> LeaderElected:
    return LeaderElected(role="scheduler", node="c3", ttl_s=3, epoch=411, ts=T0)


def test_a_leader_with_every_loop_running_is_healthy() -> None:
    view = leader_view("scheduler", record({"assignment": "running", "membership": "running"}), elected())
    assert view.healthy and "UNHEALTHY" not in format_table([view], T0)


def test_a_zombie_leader_shows_as_unhealthy_with_the_loops_that_are_down() -> None:
    loops = {"assignment": "backing-off: TimeoutError: nats: timeout", "membership": "running", "populator": "waiting"}
    view = leader_view("scheduler", record(loops), elected())
    assert not view.healthy
    table = format_table([view], T0)
    assert "UNHEALTHY: loops not running: assignment (backing-off: TimeoutError: nats: timeout); populator (waiting)" in table


def test_doctor_fails_a_leader_with_loops_down_and_passes_a_healthy_one() -> None:
    down = check_leader(LeaderProbe(node="c3", epoch=411, loops={"assignment": "backing-off: TimeoutError", "pipeline": "running"}))
    assert not down.ok and down.required and "assignment (backing-off: TimeoutError)" in down.detail and "c3" in down.fix
    up = check_leader(LeaderProbe(node="c3", epoch=411, loops={"assignment": "running"}))
    assert up.ok and "1 loops running" in up.detail
    nobody = check_leader(LeaderProbe())
    assert nobody.ok and not nobody.required and "no scheduler leader" in nobody.detail


def test_loop_summaries_carry_state_and_error() -> None:
    assert loop_summary(LoopHealth()) == "running"
    assert loop_summary(LoopHealth(state=LoopState.BACKING_OFF, last_error="KeyError: 'x'")) == "backing-off: KeyError: 'x'"
