"""Loop lag: a blocked event loop shows up as a late timer, counted and logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from services.looplag import LoopLagMonitor, LoopLagStats


def test_record_keeps_last_worst_and_the_count_over_threshold(caplog: pytest.LogCaptureFixture) -> None:
    monitor = LoopLagMonitor(threshold=0.25, name="scheduler")
    assert monitor.statistics() == LoopLagStats(0.0, 0.0, 0, 0)
    with caplog.at_level(logging.WARNING, logger="services.looplag"):
        for lag in (0.01, 0.5, 0.02, 0.3):
            monitor.record(lag)
    assert monitor.statistics() == LoopLagStats(last_s=0.3, max_s=0.5, over_threshold=2, samples=4)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all(w.startswith("scheduler event loop lagged") for w in warnings)


async def test_a_blocked_loop_is_measured(eventually) -> None:
    monitor = LoopLagMonitor(interval=0.02, threshold=0.1)
    task = asyncio.ensure_future(monitor.run())
    try:
        await eventually(lambda: monitor.statistics().samples >= 3)
        time.sleep(0.3)  # deliberately block the loop: the fault being measured
        blocked_at = monitor.statistics().samples
        await eventually(lambda: monitor.statistics().samples > blocked_at)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stats = monitor.statistics()
    # A lower bound only: a noisy machine can add lag, never remove the block.
    assert stats.max_s >= 0.25
    assert stats.over_threshold >= 1


async def test_an_idle_loop_keeps_sampling_until_cancelled(eventually) -> None:
    monitor = LoopLagMonitor(interval=0.01)
    task = asyncio.ensure_future(monitor.run())
    await eventually(lambda: monitor.statistics().samples >= 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
