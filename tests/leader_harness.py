"""One leader-only loop of the scheduler (distribution, sync planner, config watch ...) run in the test process under a term."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from cluster.leadership.term import Term
from config.settings import RrConfig
from eventbus.connection import Bus
from eventbus.events import LeaderElected
from eventbus.publisher import Publisher
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext

LeaderLoop = Callable[[ServiceContext, Term], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def leader_loop_running(
    bus: Bus, loop: LeaderLoop, config: RrConfig, *, node: str = "test-leader", epoch: int = 1,
    nats_url: str | None = None, config_path: str | None = None, announce: bool = True,
) -> AsyncIterator[ServiceContext]:
    """`loop` under a term of `epoch` held by `node` (announced with LEADER_ELECTED first), cancelled on exit."""
    publisher = Publisher(bus)
    if announce:
        await publisher.publish(LeaderElected(role="scheduler", node=node, epoch=epoch))
    ctx = ServiceContext("scheduler", bus, config, CommonOptions(nats_url=nats_url, node_id=node, config_path=config_path))
    task = asyncio.get_running_loop().create_task(loop(ctx, Term("scheduler", node, epoch, None, publisher, lambda: True)))
    try:
        yield ctx
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(15):  # a loop that ignores its cancellation fails the test, never hangs it
                await task
