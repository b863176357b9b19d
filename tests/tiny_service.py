"""Tiny services for the runtime tests: one announces itself and stops when asked, the others misbehave."""

from __future__ import annotations

import asyncio

from eventbus.errors import BusUnavailable
from eventbus.events import HostOnline
from servicekit.runtime import ServiceContext

# Every context a service here was started with, so a test can look at (and stop) it.
CONTEXTS: list[ServiceContext] = []
STRAGGLERS: list[asyncio.Task[None]] = []  # kept referenced, as a real service's tasks are


async def main(ctx: ServiceContext) -> None:
    """Publish one HOST_ONLINE for this node, then return once a stop is asked for."""
    CONTEXTS.append(ctx)
    await ctx.publisher.publish(HostOnline(node=ctx.node_id, reason="tiny_service", roles=[ctx.name]))
    await ctx.stopping.wait()


async def stubborn(ctx: ServiceContext) -> None:
    """Never returns on its own: the runtime must cancel it after the grace period."""
    CONTEXTS.append(ctx)
    await asyncio.get_running_loop().create_future()


async def deaf(ctx: ServiceContext) -> None:
    """Announces itself, then swallows every cancellation: the runtime must end the process anyway."""
    await ctx.publisher.publish(HostOnline(node=ctx.node_id, reason="tiny_service", roles=[ctx.name]))
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # the bug the runtime guards against


async def straggler(ctx: ServiceContext) -> None:
    """Returns when asked, leaving behind a task that loses the first cancellation it gets (as a wait_for can)."""

    async def loses_one_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(3600)

    STRAGGLERS.append(asyncio.create_task(loses_one_cancel()))
    await ctx.publisher.publish(HostOnline(node=ctx.node_id, reason="tiny_service", roles=[ctx.name]))
    await ctx.stopping.wait()


async def cancelled_inside(ctx: ServiceContext) -> None:
    """Ends with CancelledError though nobody stopped it: a future it awaited was cancelled by someone else."""
    CONTEXTS.append(ctx)
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.cancel)
    await future


async def broken(ctx: ServiceContext) -> None:
    """Fails the way a service does when the bus goes away under it."""
    CONTEXTS.append(ctx)
    raise BusUnavailable("tiny service lost the bus")
