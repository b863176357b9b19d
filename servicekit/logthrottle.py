"""One logging filter for every rr process: a line repeated in a burst is let through a few times, then counted.

Faults make loops retry, and a retry that logs floods the log (a worker logged "pull ended 503"
2,000 times a second during a stream election). Per key, the first `burst` records of each
`window_s` pass; the rest are dropped and counted, and the next record let through for that key
carries the count. Warnings and errors are keyed by their line with every number blanked (so
"could not publish for w-0001", "... w-0002" count as one flood), info and debug by the exact
line (distinct events with the same wording, such as each job's end, all pass). The bound is in
README (Logging).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

WINDOW_S = 10.0
BURST = 3
_DIGITS = re.compile(r"\d+")
MAX_KEYS = 4096  # forget the oldest keys past this many: a filter must not grow without bound


class _Window:
    __slots__ = ("start", "passed", "dropped")

    def __init__(self, start: float) -> None:
        self.start, self.passed, self.dropped = start, 0, 0


class RepeatFilter(logging.Filter):
    """Rate-limits repeated records per key; see the module docstring."""

    def __init__(self, window_s: float = WINDOW_S, burst: int = BURST, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s, self.burst, self._clock = window_s, burst, clock
        self._windows: dict[tuple[str, int, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        line = record.getMessage()
        key = (record.name, record.levelno, _DIGITS.sub("#", line) if record.levelno >= logging.WARNING else line)
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= self.window_s:
            dropped = window.dropped if window is not None else 0
            self._windows.pop(key, None)
            window = self._windows[key] = _Window(now)
            if dropped:
                record.msg = f"{record.msg} [and {dropped} more like this in the last {self.window_s:g}s]"
            self._forget_oldest()
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.dropped += 1
        return False

    def _forget_oldest(self) -> None:
        while len(self._windows) > MAX_KEYS:
            self._windows.pop(next(iter(self._windows)))


def install(handlers: list[logging.Handler] | None = None) -> None:
    """Put one RepeatFilter on each of the root logger's handlers (once)."""
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
