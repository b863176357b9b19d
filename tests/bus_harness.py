"""Test harness for the event bus: a connection with the streams provisioned, and a consumer run in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from eventbus.connection import Bus, connect
from eventbus.consumer import ConsumerSpec, EventConsumer
from eventbus.streams import EVENTS_STREAM, StreamSettings, provision


@contextlib.asynccontextmanager
async def provisioned_bus(url: str, node_id: str = "node-a", settings: StreamSettings | None = None) -> AsyncIterator[Bus]:
    """A connected Bus on a server whose streams are provisioned; closed on exit."""
    bus = await connect(url, node_id=node_id)
    try:
        await provision(bus.js, settings or StreamSettings())
        yield bus
    finally:
        await bus.close()


async def stored_count(bus: Bus, subject: str, stream: str = EVENTS_STREAM) -> int:
    """How many messages `stream` holds on subjects matching `subject`."""
    info = await bus.js.stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


def short_api_waits(bus: Bus, seconds: float) -> None:
    """Every JetStream API call of `bus` (nats-py's own, default 5 s, and the reads', 10 s) gives up after `seconds`.

    For tests of a server that is down: a call fails only once its wait runs out, so the defaults are waited out.
    """
    bus.api_timeout_s = seconds
    bus.js = bus.nc.jetstream(timeout=seconds)


def quick_spec(durable: str, **overrides: Any) -> ConsumerSpec:
    """A consumer spec whose pull requests expire fast, so stop() returns within a second."""
    # stop() waits for the open pull request to expire; the 5 s default would cost 5 s per test.
    values: dict[str, Any] = {"durable": durable, "pull_expires_s": 0.5, "backoff_s": (0.05,)}
    values.update(overrides)
    return ConsumerSpec(**values)


@contextlib.asynccontextmanager
async def running(consumer: EventConsumer) -> AsyncIterator[EventConsumer]:
    """Run a consumer for the duration of the block; stop it and surface any error it raised."""
    task = asyncio.ensure_future(consumer.run())
    try:
        yield consumer
    finally:
        await consumer.stop()
        await asyncio.wait_for(task, timeout=10)
