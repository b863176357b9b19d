"""Consume throughput: our EventConsumer against nats-py's ordered push consumer, same stream.

The stream is filled once with N events. Then, alternating:
raw:  js.subscribe(..., ordered_consumer=True, cb=...) counting messages until all arrived
      (no decode, no acks: the fastest way nats-py reads a stream, our ceiling).
ours: EventConsumer on a fresh durable consumer: decode, dispatch to a no-op async handler,
      explicit ack each, until every event was handled.
Run: python -m ops.bench.bench_consume [--events 200000] [--rounds 3]
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import nats.js.errors
from nats.aio.msg import Msg

from eventbus.connection import Bus
from eventbus.consumer import ConsumerSpec, Delivery, EventConsumer
from eventbus.events import Event, WorkProgress
from eventbus.publisher import Publisher
from eventbus.streams import EVENTS_STREAM, StreamSettings
from eventbus.subjects import ALL_EVENTS
from ops.bench.common import (
    Stopwatch,
    alternate,
    bench_bus,
    bench_server,
    fresh_events_stream,
    log,
    rounds_result,
    run_rounds,
    sample_events,
)

GOAL = 0.6
FILL_CHUNK = 20_000


def read_timeout(events: int) -> float:
    """A bound on one round, far above what a healthy server needs."""
    return 30.0 + events / 5_000


class Countdown:
    """Counts arrivals and wakes the waiter when the last expected one came."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0
        self.all_seen = asyncio.Event()

    def tick(self) -> None:
        """One more arrived."""
        self.seen += 1
        if self.seen >= self.expected:
            self.all_seen.set()

    async def wait_all_seen(self, timeout: float, side: str) -> None:
        """Until every expected arrival, or a RuntimeError naming how far it got."""
        try:
            await asyncio.wait_for(self.all_seen.wait(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{side}: {self.seen} of {self.expected} after {timeout:.0f}s") from None


async def fill(bus: Bus, events: int) -> None:
    """Publish the events every round reads, in chunks to bound memory."""
    publisher = Publisher(bus)
    for start in range(0, events, FILL_CHUNK):
        await publisher.publish_many(sample_events(min(FILL_CHUNK, events - start)))
        log(f"filled {min(start + FILL_CHUNK, events):,}/{events:,}")


async def raw_round(bus: Bus, events: int) -> float:
    """Events/s of an ordered push consumer that only counts."""
    countdown = Countdown(events)

    async def on_message(_msg: Msg) -> None:
        countdown.tick()

    clock = Stopwatch()
    sub = await bus.js.subscribe(ALL_EVENTS, ordered_consumer=True, cb=on_message)
    try:
        await countdown.wait_all_seen(read_timeout(events), "raw")
        return clock.rate(events)
    finally:
        await sub.unsubscribe()


async def ours_round(bus: Bus, events: int, durable: str) -> float:
    """Events/s of EventConsumer decoding, dispatching to a no-op handler and acking."""
    countdown = Countdown(events)

    async def on_progress(_event: Event, _where: Delivery) -> None:
        countdown.tick()

    consumer = EventConsumer(bus, ConsumerSpec(durable=durable), {WorkProgress: on_progress})
    clock = Stopwatch()
    task = asyncio.ensure_future(consumer.run())
    try:
        await countdown.wait_all_seen(read_timeout(events), "ours")
        rate = clock.rate(events)
    finally:
        await consumer.stop()
        await asyncio.wait_for(task, timeout=15)
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await bus.js.delete_consumer(EVENTS_STREAM, durable)
    return rate


async def bench(events: int, rounds: int, settings: StreamSettings) -> dict[str, Any]:
    """Fill once, then alternating rounds of both sides; the result line."""
    async with bench_server() as server, bench_bus(server.url) as bus:
        await fresh_events_stream(bus, settings)
        await fill(bus, events)
        durables = (f"bench-{i}" for i in itertools.count())

        async def nothing() -> None:
            return None

        sides = {"raw": lambda: raw_round(bus, events), "ours": lambda: ours_round(bus, events, next(durables))}
        rates = await alternate(rounds, sides, nothing)
    return rounds_result("consume", events, rounds, settings, rates, GOAL)


def main() -> None:
    """Parse arguments, run the benchmark, print its JSON line."""
    run_rounds(__doc__, "consume", 200_000, bench)


if __name__ == "__main__":
    main()
