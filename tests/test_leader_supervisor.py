"""The leader-loop supervisor: restart what ends or fails inside the term, resign when a loop cannot run, stop promptly."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from cluster.leadership.supervisor import (
    LoopHealth,
    LoopsCannotRun,
    LoopState,
    LoopSupervisor,
    Resign,
    Restart,
    SupervisorSettings,
    after_run,
    backoff_s,
    unhealthy,
)
from cluster.leadership.term import NotLeader
from eventbus.errors import BusUnavailable, is_transient
from eventbus.tasks import stop_tasks

FAST = SupervisorSettings(base_s=0.01, cap_s=0.05, give_up_after=3, healthy_after_s=60.0, poll_s=0.01, stop_within_s=0.5)


def rng() -> random.Random:
    return random.Random(7)


# ---- the pure decisions --------------------------------------------------------------


def test_backoff_doubles_is_capped_and_jittered() -> None:
    settings = SupervisorSettings(base_s=1.0, cap_s=8.0)
    delays = [backoff_s(n, settings, rng()) for n in range(1, 8)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(8.0, 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len({backoff_s(3, settings, random.Random(seed)) for seed in range(10)}) > 1  # jittered


def test_a_transient_failure_restarts_forever_and_never_resigns() -> None:
    health = LoopHealth()
    for _ in range(50):
        step = after_run(health, BusUnavailable("no responders"), ran_s=0.1, may_act=True, settings=FAST, rng=rng())
        assert isinstance(step, Restart)
        health = step.health
    assert health.state is LoopState.BACKING_OFF and health.failures_in_row == 0 and health.restarts == 50
    assert step.delay_s <= FAST.cap_s


def test_a_loop_that_keeps_failing_resigns_the_term() -> None:
    health = LoopHealth()
    steps = []
    for _ in range(3):
        step = after_run(health, ValueError("bug"), ran_s=0.1, may_act=True, settings=FAST, rng=rng())
        steps.append(step)
        health = step.health
    assert [type(s) for s in steps] == [Restart, Restart, Resign]
    assert "ValueError: bug" in steps[-1].reason


def test_a_long_healthy_run_resets_the_failure_count() -> None:
    health = LoopHealth(failures_in_row=2, ends_in_row=5)
    step = after_run(health, ValueError("bug"), ran_s=120.0, may_act=True, settings=FAST, rng=rng())
    assert isinstance(step, Restart) and step.health.failures_in_row == 1 and step.health.ends_in_row == 1


def test_a_loop_ending_while_the_term_may_not_act_waits_without_counting() -> None:
    for exc in (NotLeader("term 3 may no longer act"), None, ValueError("x")):
        step = after_run(LoopHealth(failures_in_row=2), exc, ran_s=0.1, may_act=False, settings=FAST, rng=rng())
        assert isinstance(step, Restart) and step.health.state is LoopState.WAITING
        assert step.health.failures_in_row == 2


def test_a_loop_that_returns_while_leading_is_restarted() -> None:
    step = after_run(LoopHealth(), None, ran_s=0.1, may_act=True, settings=FAST, rng=rng())
    assert isinstance(step, Restart) and step.health.state is LoopState.BACKING_OFF and step.health.last_error == "returned"


def test_transient_errors_include_nats_timeouts_no_responders_and_503_groups() -> None:
    import nats.errors
    import nats.js.errors

    assert is_transient(nats.errors.TimeoutError())
    assert is_transient(nats.errors.NoRespondersError())
    assert is_transient(nats.js.errors.ServiceUnavailableError())
    assert is_transient(nats.js.errors.NoStreamResponseError())  # a JetStream publish that no stream answered
    assert is_transient(ExceptionGroup("start", [nats.errors.TimeoutError(), BusUnavailable("x")]))
    assert not is_transient(ExceptionGroup("start", [nats.errors.TimeoutError(), KeyError("x")]))
    assert not is_transient(ValueError("bug"))


def test_unhealthy_names_the_loops_not_running() -> None:
    loops = {"assignment": LoopHealth(), "membership": LoopHealth(state=LoopState.BACKING_OFF, last_error="TimeoutError")}
    assert unhealthy(loops) == ["membership (backing-off: TimeoutError)"]


# ---- the shell ----------------------------------------------------------------------


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_a_loop_that_ends_or_fails_runs_again_and_the_others_keep_running() -> None:
    starts = {"steady": 0, "flaky": 0}
    reports: list[dict[str, LoopHealth]] = []

    async def steady() -> None:
        starts["steady"] += 1
        await asyncio.Event().wait()

    async def flaky() -> None:
        starts["flaky"] += 1
        if starts["flaky"] == 1:
            return  # ended silently, as the zombie leader's loops did
        if starts["flaky"] == 2:
            raise BusUnavailable("503 during a stream election")
        await asyncio.Event().wait()

    supervisor = LoopSupervisor({"steady": steady, "flaky": flaky}, lambda: True, settings=FAST, on_health=reports.append, rng=rng())
    task = asyncio.create_task(supervisor.run())
    await wait_for(lambda: starts["flaky"] == 3)
    await wait_for(lambda: supervisor.health["flaky"].state is LoopState.RUNNING)
    assert starts["steady"] == 1
    assert supervisor.health["flaky"].restarts == 2
    assert any(r["flaky"].state is LoopState.BACKING_OFF for r in reports)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_loop_that_cannot_run_makes_the_supervisor_raise_and_stops_the_others() -> None:
    stopped = asyncio.Event()

    async def steady() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async def broken() -> None:
        raise KeyError("hosts.g1")

    supervisor = LoopSupervisor({"steady": steady, "broken": broken}, lambda: True, settings=FAST, rng=rng())
    with pytest.raises(LoopsCannotRun, match="broken failed 3 times in a row"):
        await asyncio.wait_for(supervisor.run(), 10)
    assert stopped.is_set()


async def test_loops_stopped_by_not_leader_wait_for_the_term_and_run_again() -> None:
    acting = {"now": True}
    starts = 0

    async def publisher() -> None:
        nonlocal starts
        starts += 1
        if not acting["now"]:
            raise NotLeader("lease unverified")
        await asyncio.sleep(0.02)
        acting["now"] = starts > 1  # the first run sees a renewal hiccup
        if not acting["now"]:
            raise NotLeader("lease unverified")
        await asyncio.Event().wait()

    supervisor = LoopSupervisor({"publisher": publisher}, lambda: acting["now"], settings=FAST, rng=rng())
    task = asyncio.create_task(supervisor.run())
    await wait_for(lambda: supervisor.health["publisher"].state is LoopState.WAITING)
    acting["now"] = True
    await wait_for(lambda: starts >= 2 and supervisor.health["publisher"].state is LoopState.RUNNING)
    assert supervisor.health["publisher"].failures_in_row == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_loop_that_swallows_cancellation_does_not_hold_the_stop() -> None:
    released = False

    async def stubborn() -> None:
        while not released:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass  # the bug this guards against

    supervisor = LoopSupervisor({"stubborn": stubborn}, lambda: True, settings=FAST, rng=rng())
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.05)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < FAST.stop_within_s + 1.0
    left = [t for t in asyncio.all_tasks() if t.get_name() == "leader-loop:stubborn"]
    assert left and not left[0].done()  # abandoned, as logged
    released = True
    left[0].cancel()
    await asyncio.wait(left, timeout=1)


async def test_stop_tasks_does_not_swallow_the_callers_cancellation() -> None:
    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.2)  # a slow cleanup

    inner = asyncio.create_task(slow())
    await asyncio.sleep(0)
    outer = asyncio.create_task(stop_tasks([inner], 5.0))
    await asyncio.sleep(0.05)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.wait([inner], timeout=1)


async def test_a_loop_killed_by_a_cancelled_call_it_awaited_is_restarted_not_lost() -> None:
    starts = 0
    inner: list[asyncio.Future[None]] = []

    async def awaits_a_request() -> None:
        nonlocal starts
        starts += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        inner.append(future)
        await future  # a client cancels its pending requests on a disconnect

    supervisor = LoopSupervisor({"assignment": awaits_a_request}, lambda: True, settings=FAST, rng=rng())
    task = asyncio.create_task(supervisor.run())
    await wait_for(lambda: len(inner) == 1)
    inner[0].cancel()
    await wait_for(lambda: starts == 2 and supervisor.health["assignment"].state is LoopState.RUNNING)
    assert "CancelledInside" in supervisor.health["assignment"].last_error
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
