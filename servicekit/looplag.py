"""Event-loop lag: how late a timer fires tells whether something blocks the loop.

The seeds' daemons accepted TCP and never answered because their loop was blocked at start;
every service here measures its own loop and reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping

import msgspec

log = logging.getLogger(__name__)


class LoopLagStats(msgspec.Struct, frozen=True):
    """Loop lag so far: last and worst delay in seconds, and how many samples passed the threshold."""

    last_s: float
    max_s: float
    over_threshold: int
    samples: int


class LoopLagMonitor:
    """Samples the loop every `interval` seconds; a sample later than `threshold` is logged and counted."""

    def __init__(self, *, interval: float = 0.5, threshold: float = 0.25, name: str = "") -> None:
        self.interval = interval
        self.threshold = threshold
        self.name = name
        self._last = 0.0
        self._max = 0.0
        self._over = 0
        self._samples = 0

    def statistics(self) -> LoopLagStats:
        """Lag figures so far (also sent in heartbeats)."""
        return LoopLagStats(self._last, self._max, self._over, self._samples)

    def record(self, lag: float) -> None:
        """Account one measured lag."""
        self._last = lag
        self._max = max(self._max, lag)
        self._samples += 1
        if lag > self.threshold:
            self._over += 1
            log.warning("%s event loop lagged %.3fs (threshold %.3fs)", self.name or "service", lag, self.threshold)

    async def run(self) -> None:
        """Measure forever (cancel to stop)."""
        while True:
            start = time.monotonic()
            await asyncio.sleep(self.interval)
            self.record(max(0.0, time.monotonic() - start - self.interval))


# Opt-in, for tests that replay the seeds' blocked daemons on a real process: with this set to N,
# SIGUSR2 makes the service's loop run time.sleep(N) in a callback -- a loop that is really blocked
# (SIGSTOP would freeze the whole process, lag monitor included, which is not the incident).
# Unset (production), no handler is installed and SIGUSR2 keeps its default action.
BLOCK_ENV = "RR_DEBUG_BLOCK_LOOP_S"


def block_seconds(env: Mapping[str, str]) -> float | None:
    """How long SIGUSR2 blocks the loop, from $RR_DEBUG_BLOCK_LOOP_S; None when unset (pure)."""
    raw = env.get(BLOCK_ENV, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"${BLOCK_ENV}={raw!r} is not a number of seconds: unset it, or set e.g. {BLOCK_ENV}=30") from None
    if seconds <= 0:
        raise ValueError(f"${BLOCK_ENV}={raw!r} must be a positive number of seconds: unset it, or set e.g. {BLOCK_ENV}=30")
    return seconds


def install_block_hook(env: Mapping[str, str] = os.environ) -> float | None:
    """Install the SIGUSR2 loop blocker when $RR_DEBUG_BLOCK_LOOP_S asks for it; the seconds, or None."""
    seconds = block_seconds(env)
    if seconds is None:
        return None

    def block() -> None:
        log.warning("SIGUSR2 with $%s=%s: blocking the event loop for %.1fs", BLOCK_ENV, env[BLOCK_ENV], seconds)
        time.sleep(seconds)  # deliberately on the loop: this is the fault being replayed

    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, block)
    return seconds
