"""rr's metrics as observable instruments: each export reads the services' `statistics()`, so nothing costs on the hot path.

Consumer lag (num_pending) needs a request to the server: it is sampled at export time, from
the exporter's thread, on the service's event loop, with a timeout; the last answer stands in
when none comes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from eventbus.connection import Bus
from eventbus.consumer import EventConsumer
from eventbus.consumerlag import ConsumerLag, consumer_lag
from servicekit.telemetry.observed import Observed

CONSUMED_OUTCOMES = ("handled", "ignored", "failed", "parked", "duplicates")
LAG_SAMPLE_TIMEOUT_S = 3.0


class ServerLagSampler:
    """Asks the server for each consumer's lag from another thread, through the service's loop."""

    def __init__(self, bus: Bus, loop: asyncio.AbstractEventLoop) -> None:
        self._bus = bus
        self._loop = loop
        self._last: dict[str, ConsumerLag] = {}

    def sample(self, consumers: list[EventConsumer]) -> dict[str, ConsumerLag]:
        """The lag of every consumer by durable name (blocking; never call it on the loop itself)."""
        if self._loop.is_closed() or _on_loop(self._loop):
            return dict(self._last)
        futures = {
            c.spec.durable: asyncio.run_coroutine_threadsafe(consumer_lag(self._bus, c.spec.stream, c.spec.durable), self._loop)
            for c in consumers
        }
        for durable, future in futures.items():
            try:
                lag = future.result(timeout=LAG_SAMPLE_TIMEOUT_S)
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
                future.cancel()
                continue
            if lag is not None:
                self._last[durable] = lag
        return dict(self._last)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


Sampler = Callable[[list[EventConsumer]], dict[str, ConsumerLag]]


def install_instruments(meter: Meter, observed: Observed, sample_lag: Sampler | None = None) -> None:
    """Register rr's instruments on `meter`, reading `observed` whenever metrics are collected."""
    _loop_lag_instruments(meter, observed)
    _event_instruments(meter, observed)
    if sample_lag is not None:
        _lag_instruments(meter, observed, sample_lag)
    durations = meter.create_histogram("rr.job.duration", unit="s", description="Duration of the jobs this service ran")
    observed.jobs.on_record = lambda seconds, outcome: durations.record(seconds, {"outcome": outcome})


def _loop_lag_instruments(meter: Meter, observed: Observed) -> None:
    def last(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(observed.loop_lag.statistics().last_s)]

    def worst(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(observed.loop_lag.statistics().max_s)]

    def slow(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(observed.loop_lag.statistics().over_threshold)]

    meter.create_observable_gauge("rr.loop.lag", [last], unit="s", description="Event-loop lag, last sample")
    meter.create_observable_gauge("rr.loop.lag.max", [worst], unit="s", description="Worst event-loop lag so far")
    meter.create_observable_counter("rr.loop.lag.slow", [slow], description="Loop-lag samples over the threshold")


def _event_instruments(meter: Meter, observed: Observed) -> None:
    def published(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(observed.publisher.statistics().published)]

    def consumed(_: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(getattr(c.statistics(), outcome), {"consumer": c.spec.durable, "outcome": outcome})
            for c in observed.consumers for outcome in CONSUMED_OUTCOMES
        ]

    def redelivered(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.statistics().redelivered, {"consumer": c.spec.durable}) for c in observed.consumers]

    def dead_letters(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.statistics().parked, {"consumer": c.spec.durable}) for c in observed.consumers]

    meter.create_observable_counter("rr.events.published", [published], description="Events appended to the log")
    meter.create_observable_counter("rr.events.consumed", [consumed], description="Events delivered, by outcome")
    meter.create_observable_counter("rr.consumer.redeliveries", [redelivered], description="Redelivered messages")
    meter.create_observable_counter("rr.consumer.dead_letters", [dead_letters], description="Messages parked in RR_DEADLETTER")


def _lag_instruments(meter: Meter, observed: Observed, sample_lag: Sampler) -> None:
    # One sample per collection serves both gauges: the first callback asks, the second reuses it.
    latest: dict[str, ConsumerLag] = {}

    def pending(_: CallbackOptions) -> Iterable[Observation]:
        latest.clear()
        latest.update(sample_lag(list(observed.consumers)))
        return [Observation(lag.pending, {"consumer": durable}) for durable, lag in latest.items()]

    def ack_pending(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(lag.ack_pending, {"consumer": durable}) for durable, lag in latest.items()]

    meter.create_observable_gauge("rr.consumer.pending", [pending], description="Messages the consumer has yet to receive (sampled)")
    meter.create_observable_gauge("rr.consumer.ack_pending", [ack_pending], description="Messages received, not yet acked (sampled)")
