"""Event-loop lag: how late a timer fires tells whether something blocks the loop.

The seeds' daemons accepted TCP and never answered because their loop was blocked at start;
every service here measures its own loop and reports it.
"""

from __future__ import annotations

import asyncio
import logging
import time

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
