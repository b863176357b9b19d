"""Backoff: failed items retry after growing delays, the populator rests failing configs, and a failing fleet's event rate is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any

import msgspec
import pytest

from config.hosts import HostsConfig
from config.sections.backoff import Backoff
from config.sections.pipeline import PipelineSettings
from config.sections.scheduler import SchedulerSettings
from config.settings import RrConfig
from eventbus.events import ArtifactRef, Event, HostOnline, SelfplayComplete, WorkAdded, WorkAssigned, WorkAttemptFailed, WorkCompleted, WorkFailed, decode
from eventbus.publisher import Publisher
from projections.bundle import fold_all_events
from projections.work import WorkItem, WorkStatus
from services.leader import queue
from services.leader.assigner import assignment_loop
from services.leader.backoff import Streak, failure_streaks, resting_configs
from services.leader.decisions import assignment_round
from services.leader.pipeline import training_items
from services.leader.pipeline_view import PipelineView, apply
from services.leader.populator import decide
from tests import background_runs
from tests.bus_harness import provisioned_bus
from tests.leader_harness import leader_loop_running
from tests.procs.failing_fleet import MinuteReport
from tests.scheduler_harness import read_log, simulated_worker
from tests.terms import TERM, as_term, decided, in_term

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SETTINGS = SchedulerSettings()  # the documented defaults: retry 5 s doubling to 300 s; populator 30 s doubling to 1800 s


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_delays_double_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(base_s=5, cap_s=300)
    assert [backoff.delay(n) for n in range(9)] == [0, 5, 10, 20, 40, 80, 160, 300, 300]
    assert Backoff(base_s=5, cap_s=300).delay(10_000) == 300


def failed_attempt(work_id: str, attempt: int, seconds: float) -> list[Event]:
    return [WorkAssigned(work_id=work_id, node="vm", attempt=attempt, deadline=at(9999), ts=at(seconds)),
            WorkAttemptFailed(work_id=work_id, node="vm", attempt=attempt, reason="exit 1", ts=at(seconds))]


def fold(events: list[Event]) -> queue.QueueState:
    state = queue.QueueState()
    for seq, event in enumerate(in_term(events), 1):
        state = queue.apply(state, event, seq)
    return state


def test_a_failed_item_is_assigned_again_only_after_its_growing_delay() -> None:
    settings = SchedulerSettings(max_attempts=5)
    log: list[Event] = [HostOnline(node="vm"), WorkAdded(work_id="w", work_type="selfplay", board_type="hex8", num_players=2)]
    log += failed_attempt("w", 1, 0)
    assert assignment_round(fold(log), at(4.9), None, settings) == []
    [retry] = assignment_round(fold(log), at(5), None, settings)
    assert retry.event.attempt == 2  # type: ignore[attr-defined]
    log += failed_attempt("w", 2, 100)
    assert assignment_round(fold(log), at(109.9), None, settings) == []
    assert len(assignment_round(fold(log), at(110), None, settings)) == 1


def test_other_items_are_assigned_while_one_waits_out_its_backoff() -> None:
    log: list[Event] = [HostOnline(node="vm")]
    log += [WorkAdded(work_id=w, work_type="selfplay", board_type="hex8", num_players=2) for w in ("a", "b")]
    log += failed_attempt("a", 1, 0)
    assert [d.work_id for d in assignment_round(fold(log), at(1), None, SETTINGS)] == ["b"]


def item(work_id: str, status: WorkStatus, seq: int, config: str = "hex8") -> WorkItem:
    return WorkItem(work_id=work_id, work_type="selfplay", board_type=config, num_players=2, status=status,
                    updated_seq=seq, updated_at=at(seq))


def test_a_configs_failure_streak_ends_with_a_completed_item() -> None:
    items = [item("a", WorkStatus.FAILED, 1), item("b", WorkStatus.COMPLETED, 2), item("c", WorkStatus.FAILED, 3),
             item("d", WorkStatus.FAILED, 4), item("e", WorkStatus.PENDING, 5), item("f", WorkStatus.COMPLETED, 6, "square8"),
             item("g", WorkStatus.CANCELLED, 7)]
    assert failure_streaks(items) == {"hex8_2p": Streak(failed=2, last_failed_at=at(4), last_seq=4)}
    rest = resting_configs(failure_streaks(items), at(10), Backoff(base_s=30, cap_s=1800))
    assert rest == {"hex8_2p": at(4 + 60)}
    assert resting_configs(failure_streaks(items), at(64), Backoff(base_s=30, cap_s=1800)) == {}


def test_the_populator_rests_a_failing_config_and_feeds_the_others() -> None:
    settings = SchedulerSettings(backlog_per_node=2, default_max_parallel_jobs=2)
    log: list[Event] = [HostOnline(node="vm", ts=T0),
                        WorkAdded(work_id="x", work_type="selfplay", board_type="hex8", num_players=2, ts=T0),
                        WorkFailed(work_id="x", reason="gave up", ts=at(10))]
    state = fold_all_events(enumerate(in_term(log), 1))
    resting = decide(state, HostsConfig(), 2, settings, at(20), "p")
    assert {(e.board_type, e.num_players) for e in resting if isinstance(e, WorkAdded)} == {("square8", 2)}
    rested = decide(state, HostsConfig(), 2, settings, at(40), "p")
    assert {e.board_type for e in rested if isinstance(e, WorkAdded)} == {"hex8", "square8"}


async def test_a_failed_attempt_is_retried_after_the_backoff_on_a_real_server(nats_url: str, eventually: Any) -> None:
    settings = SchedulerSettings(max_attempts=3, retry_backoff=Backoff(base_s=1.0, cap_s=10.0), populator_enabled=False)
    async with provisioned_bus(nats_url, node_id="vm") as bus:
        pub = Publisher(bus)
        await as_term(pub, HostOnline(node="vm"))
        worker = asyncio.create_task(simulated_worker(bus, "vm", lambda job: "fail"))
        try:
            async with leader_loop_running(bus, assignment_loop, RrConfig(scheduler=settings)):
                await pub.publish(WorkAdded(work_id="w", work_type="selfplay", board_type="hex8", num_players=2))
                await eventually(lambda: _logged(bus, WorkFailed), timeout=30, message="the item failed")
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        log = await read_log(bus)
        failed = {e.attempt: e.ts for e in log if isinstance(e, WorkAttemptFailed)}
        assigned = {e.attempt: e.ts for e in log if isinstance(e, WorkAssigned)}
        assert (assigned[2] - failed[1]).total_seconds() >= 1.0
        assert (assigned[3] - failed[2]).total_seconds() >= 2.0


async def _logged(bus: Any, kind: type[Event]) -> list[Any] | None:
    found = [e for e in await read_log(bus) if isinstance(e, kind)]
    return found or None


# The README's bound: a fleet whose every job fails writes at most this many events in its first
# minute (measured with `rr up` and a template that exits 1: see README, Backoff), far fewer later.
FIRST_MINUTE_BOUND = 150


@pytest.mark.timeout(150)
def test_a_fleet_whose_every_job_fails_stays_under_the_stated_event_rate(request: pytest.FixtureRequest) -> None:
    # Two nodes, instant failures, the documented default backoffs, for a minute on their own server
    # (tests/procs/failing_fleet.py): a background run (tests/background_runs.py), so the minute passed beside the tests before it.
    code, output = background_runs.result(request.config, "failing_fleet", timeout=140)
    assert code == 0, f"the failing fleet's run exited {code}:\n{output[-3000:]}"
    report = msgspec.json.decode(output.splitlines()[-1], type=MinuteReport)
    log, elapsed = [decode(bytes(raw)) for raw in report.events], report.elapsed_s
    assert any(isinstance(e, WorkFailed) for e in log), "the jobs did fail (the test measures a failing fleet)"
    assert not any(isinstance(e, WorkCompleted) for e in log)
    print(f"always-failing fleet: {len(log)} events in {elapsed:.0f}s")
    assert elapsed >= 60, f"the window was {elapsed:.1f}s, not the first minute"
    assert len(log) <= FIRST_MINUTE_BOUND * elapsed / 60, f"{len(log)} events in {elapsed:.0f}s"


def test_the_pipeline_rests_a_config_whose_training_keeps_failing() -> None:
    settings = PipelineSettings(min_new_samples=10)
    view = apply(PipelineView(), TERM, 1)  # the leader's term: its WORK_FAILED decisions carry the epoch
    view = apply(view, SelfplayComplete(batch_id="b", work_id="s", node="vm", board_type="hex8", num_players=2,
                                        num_games=5, num_samples=50, data=ArtifactRef(path="b.npz", size_bytes=1, sha256="a" * 64)), 2)
    [first] = training_items(view, settings, at(0))
    assert isinstance(first, WorkAdded)
    view = apply(view, first, 3)
    view = apply(view, decided(WorkFailed(work_id=first.work_id, reason="exit 1", ts=at(10))), 4)
    assert training_items(view, settings, at(69)) == []  # 60 s after the first failure
    [second] = training_items(view, settings, at(70))
    view = apply(apply(view, second, 5), decided(WorkFailed(work_id=second.work_id, reason="exit 1", ts=at(100))), 6)
    assert training_items(view, settings, at(219)) == []  # 120 s after the second
    [third] = training_items(view, settings, at(220))
    view = apply(apply(view, third, 7), decided(WorkAssigned(work_id=third.work_id, node="vm", attempt=1, deadline=at(999))), 8)
    view = apply(view, WorkCompleted(work_id=third.work_id, node="vm", attempt=1), 9)
    assert len(view.training_failures) == 0  # one success ends the rest
