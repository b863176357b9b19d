"""A leader whose loops are not all running reads as unhealthy in `rr leader`, `rr doctor`, /status and the dashboard."""

from __future__ import annotations

import asyncio
import datetime as dt

import msgspec
import pytest

from cli.doctor.checks import check_leader
from cli.doctor.findings import LeaderProbe
from cluster.leadership.election import loop_summary
from cluster.leadership.status import format_table, leader_view
from cluster.leadership.supervisor import LoopHealth, LoopState
from eventbus.events import LeaderElected
from eventbus.leases import LeaseBucket, LeaseRecord, LeaseValue
from eventbus.tasks import stop_tasks
from projections.bundle import ProjectionSet
from projections.status_view import LeaderView as StatusLeader
from projections.status_view import status_view, with_loops_down
from services.api.leaderhealth import watch_loops_down
from tests.api_harness import running_api
from tests.bus_harness import provisioned_bus
from tests.helpers import eventually
from tests.lostcancel import LosingACancel, stopped_on_one_cancel

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


def test_the_status_view_marks_a_leader_with_loops_down_and_leaves_a_vacant_role_alone() -> None:
    view = status_view(ProjectionSet(), now=T0, node_id="x")
    view = msgspec.structs.replace(view, leaders={
        "scheduler": StatusLeader(node="c3", epoch=411, since=T0, since_seq=1, reason=""),
        "promoter": StatusLeader(node=None, epoch=2, since=T0, since_seq=2, reason="c1 lost it"),
    })
    marked = with_loops_down(view, {"scheduler": ["assignment (backing-off: TimeoutError)"], "promoter": ["x (waiting)"]})
    assert marked.leaders["scheduler"].loops_down == ["assignment (backing-off: TimeoutError)"]
    assert marked.leaders["promoter"].loops_down == []


async def test_the_api_status_and_dashboard_data_show_the_leaders_loops_down(nats_url: str) -> None:
    async with running_api(nats_url) as api:
        await api.publish(LeaderElected(role="scheduler", node="c3", ttl_s=3, epoch=1, source="c3"))  # c3 announces its own win
        bucket = LeaseBucket(api.bus)
        await bucket.ensure()
        holder = LeaseValue(node="c3", incarnation="x", epoch=0, ttl_s=30, acquired_at=T0,
                            loops={"assignment": "backing-off: TimeoutError: nats: timeout", "membership": "running"})
        await bucket.acquire("scheduler", holder, expect_revision=0, timeout=5)

        async def marked() -> list[str]:
            answer = await api.get("/status")
            return answer.json()["leaders"].get("scheduler", {}).get("loops_down", []) if answer.status == 200 else []

        assert await eventually(marked, timeout=20) == ["assignment (backing-off: TimeoutError: nats: timeout)"]


async def test_the_apis_leader_loop_watch_stopped_while_it_reads_the_lease_ends_on_that_one_cancel(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python 3.11's wait_for, under the lease read, returns the record and drops a cancellation that
    # lands with it; the watch then read every 2 s for good, and the API's TaskGroup waited on it.
    losing = LosingACancel(LeaseBucket.read)
    monkeypatch.setattr(LeaseBucket, "read", losing)
    async with provisioned_bus(nats_url) as bus:
        bucket = LeaseBucket(bus)
        await bucket.ensure()
        holder = LeaseValue(node="c3", incarnation="x", epoch=0, ttl_s=30, acquired_at=T0, loops={"assignment": "running"})
        await bucket.acquire("scheduler", holder, expect_revision=0, timeout=5)
        task = asyncio.ensure_future(watch_loops_down(bus, bucket.name, lambda down: None, every_s=0.05))
        try:
            assert await stopped_on_one_cancel(task, losing), "the watch went on after its cancellation"
        finally:
            await stop_tasks([task], 10)
