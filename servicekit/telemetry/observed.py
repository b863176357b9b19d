"""What a running service exposes to its status endpoint and its metrics: the objects whose `statistics()` they read."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from eventbus.consumer import EventConsumer
from eventbus.publisher import Publisher
from servicekit.looplag import LoopLagMonitor


class JobDurationStats(msgspec.Struct, frozen=True):
    """Jobs this service ran, by outcome: how many and their total and longest duration in seconds."""

    count: dict[str, int]
    total_s: dict[str, float]
    max_s: float


class JobDurations:
    """Durations of the jobs a service runs, recorded by whoever runs them (`ctx.observed.jobs.record(...)`)."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._total: dict[str, float] = {}
        self._max = 0.0
        # Set while metrics are exported: feeds a histogram, which an observation cannot.
        self.on_record: Callable[[float, str], None] | None = None

    def record(self, duration_s: float, outcome: str = "completed") -> None:
        """Account one finished job."""
        self._count[outcome] = self._count.get(outcome, 0) + 1
        self._total[outcome] = self._total.get(outcome, 0.0) + duration_s
        self._max = max(self._max, duration_s)
        if self.on_record is not None:
            self.on_record(duration_s, outcome)

    def statistics(self) -> JobDurationStats:
        """Counts and durations so far."""
        return JobDurationStats(dict(self._count), dict(self._total), self._max)


class Observed:
    """The loop-lag monitor, publisher and consumers of one service, plus its job durations."""

    def __init__(self, loop_lag: LoopLagMonitor, publisher: Publisher) -> None:
        self.loop_lag = loop_lag
        self.publisher = publisher
        self.consumers: list[EventConsumer] = []
        self.jobs = JobDurations()

    def consumer(self, consumer: EventConsumer) -> EventConsumer:
        """Include a consumer in status and metrics; returns it, for `self.c = ctx.observed.consumer(EventConsumer(...))`."""
        if consumer not in self.consumers:
            self.consumers.append(consumer)
        return consumer
