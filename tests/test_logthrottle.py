"""The repeat filter: a burst of the same line passes a few times per window, the rest is counted, distinct events pass."""

from __future__ import annotations

import logging

from servicekit.logthrottle import RepeatFilter, install


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, level: int = logging.WARNING, name: str = "eventbus.consumer") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_flood_of_one_line_passes_burst_times_per_window_and_the_next_window_says_how_many_were_dropped() -> None:
    clock = Clock()
    filt = RepeatFilter(window_s=10, burst=3, clock=clock)
    passed = [r for r in (record("consumer %s: pull ended %s", "worker-g1", 503) for _ in range(2000)) if filt.filter(r)]
    assert len(passed) == 3
    clock.now = 10.0
    later = record("consumer %s: pull ended %s", "worker-g1", 503)
    assert filt.filter(later)
    assert later.getMessage() == "consumer worker-g1: pull ended 503 [and 1997 more like this in the last 10s]"


def test_warnings_count_by_line_without_numbers_and_info_by_exact_line() -> None:
    filt = RepeatFilter(window_s=10, burst=1, clock=Clock())
    assert filt.filter(record("could not publish for %s", "w-1"))
    assert not filt.filter(record("could not publish for %s", "w-2"))  # same template, same flood
    assert filt.filter(record("worker: %s ended", "w-1", level=logging.INFO))
    assert filt.filter(record("worker: %s ended", "w-2", level=logging.INFO))  # distinct events pass
    assert not filt.filter(record("worker: %s ended", "w-2", level=logging.INFO))
    assert filt.filter(record("could not publish for %s", "w-1", name="other.logger"))
    assert filt.filter(record("nats: %s", "permissions violation for publish"))  # another error, same template
    assert filt.filter(record("nats: %s", "Connect call failed ('127.0.0.1', 4222)"))
    assert not filt.filter(record("nats: %s", "Connect call failed ('127.0.0.1', 4223)"))


def test_install_puts_one_filter_on_each_root_handler() -> None:
    handler = logging.StreamHandler()
    install([handler])
    install([handler])
    assert sum(isinstance(f, RepeatFilter) for f in handler.filters) == 1
