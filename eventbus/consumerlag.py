"""How far a durable consumer is behind its stream, as the server counts it."""

from __future__ import annotations

import asyncio

import msgspec
import nats.errors

from eventbus.connection import Bus


class ConsumerLag(msgspec.Struct, frozen=True):
    """Messages not yet delivered (`pending`) and delivered but not yet acked (`ack_pending`)."""

    pending: int
    ack_pending: int
    redelivered: int


async def consumer_lag(bus: Bus, stream: str, durable: str, *, timeout: float = 2.0) -> ConsumerLag | None:
    """The consumer's lag now; None when it does not exist or the server did not answer."""
    try:
        info = await asyncio.wait_for(bus.js.consumer_info(stream, durable, timeout=timeout), timeout + 0.5)
    except (TimeoutError, nats.errors.Error):  # JetStream's errors included
        return None
    return ConsumerLag(pending=info.num_pending or 0, ack_pending=info.num_ack_pending or 0,
                       redelivered=info.num_redelivered or 0)


async def stream_lags(bus: Bus, stream: str, *, timeout: float = 2.0) -> dict[str, ConsumerLag]:
    """Every durable consumer of `stream` with its lag; {} when the server did not answer."""
    try:
        infos = await asyncio.wait_for(bus.js.consumers_info(stream), timeout)
    except (TimeoutError, nats.errors.Error):
        return {}
    return {
        info.name: ConsumerLag(pending=info.num_pending or 0, ack_pending=info.num_ack_pending or 0,
                               redelivered=info.num_redelivered or 0)
        for info in infos if info.config.durable_name
    }


async def stream_messages(bus: Bus, stream: str, *, timeout: float = 2.0) -> int | None:
    """How many messages `stream` holds now; None when it does not exist or the server did not answer."""
    try:
        info = await asyncio.wait_for(bus.js.stream_info(stream), timeout)
    except (TimeoutError, nats.errors.Error):
        return None
    return int(info.state.messages)
