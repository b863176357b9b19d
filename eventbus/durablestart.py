"""Where a durable consumer starts: chosen once, when the server first creates it, and kept after that.

A spec's `deliver` ("all", "new") suits most durables. One whose first start must cover what was
stored before it existed, but not a whole log's worth (the worker's assignments: those made to its
node since the node came online), computes a stream sequence instead, and only when the durable is
not on the server yet: the server refuses to change a durable's start later, and a durable that
exists resumes where it stopped whatever its start was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import nats.errors
import nats.js.errors
from nats.js.api import ConsumerConfig, DeliverPolicy

from eventbus.connection import Bus
from eventbus.errors import BusUnavailable

FirstStart = Callable[[], Awaitable[int]]  # the stream sequence a durable not yet created starts at


def deliver_options(deliver: Literal["all", "new"]) -> dict[str, Any]:
    """A plain spec's start: the whole stream, or only what is stored from the durable's creation on."""
    return {"deliver_policy": DeliverPolicy.ALL if deliver == "all" else DeliverPolicy.NEW}


async def start_options(bus: Bus, stream: str, durable: str, first_start: FirstStart) -> dict[str, Any]:
    """The start to create or update `durable` with: the one it has on the server, else `first_start()`'s sequence."""
    existing = await _existing(bus, stream, durable)
    if existing is not None:
        return {"deliver_policy": existing.deliver_policy, "opt_start_seq": existing.opt_start_seq,
                "opt_start_time": existing.opt_start_time}
    return {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": max(1, await first_start())}


async def _existing(bus: Bus, stream: str, durable: str) -> ConsumerConfig | None:
    try:
        info = await asyncio.wait_for(bus.js.consumer_info(stream, durable, timeout=bus.api_timeout_s),
                                      bus.api_timeout_s + 0.5)
    except nats.js.errors.NotFoundError:
        return None
    except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise BusUnavailable(f"JetStream did not answer about consumer {durable}: {exc or type(exc).__name__}") from None
    config: ConsumerConfig = info.config
    return config
