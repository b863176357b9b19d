"""Loop lag: a blocked event loop shows up as a late timer, counted and logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

import pytest

from servicekit.looplag import BLOCK_ENV, LoopLagMonitor, LoopLagStats, block_seconds, install_block_hook


def test_record_keeps_last_worst_and_the_count_over_threshold(caplog: pytest.LogCaptureFixture) -> None:
    monitor = LoopLagMonitor(threshold=0.25, name="scheduler")
    assert monitor.statistics() == LoopLagStats(0.0, 0.0, 0, 0)
    with caplog.at_level(logging.WARNING, logger="servicekit.looplag"):
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


def test_the_loop_blocker_is_off_unless_its_variable_names_positive_seconds() -> None:
    assert block_seconds({}) is None and block_seconds({BLOCK_ENV: " "}) is None
    assert block_seconds({BLOCK_ENV: "1.5"}) == 1.5
    for bad in ("soon", "0", "-3"):
        with pytest.raises(ValueError, match=BLOCK_ENV):
            block_seconds({BLOCK_ENV: bad})


def test_sigusr2_blocks_the_loop_for_the_configured_seconds_only_when_opted_in() -> None:
    async def lag_after_sigusr2(env: dict[str, str]) -> float:
        assert install_block_hook(env) == float(env[BLOCK_ENV])
        monitor = LoopLagMonitor(interval=0.05, threshold=0.2)
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(0.1)
        os.kill(os.getpid(), signal.SIGUSR2)
        await asyncio.sleep(0.3)
        task.cancel()
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR2)
        return monitor.statistics().max_s

    assert asyncio.run(lag_after_sigusr2({BLOCK_ENV: "1.0"})) >= 0.9
    # Not opted in: no handler, so the test raises SIGUSR2 only where one is installed.
    assert install_block_hook({}) is None
