"""Whether a Bus is connected right now, and waiting for it to come back after a loss (health checks, resubscribing)."""

from __future__ import annotations

import asyncio

from eventbus.connection import Bus

POLL_S = 0.25  # the client keeps a reconnect counter but offers no awaitable for it


def is_connected(bus: Bus) -> bool:
    """True while the client holds a live connection to a server (False while reconnecting or closed); any thread."""
    return bool(bus.nc.is_connected)


def reconnects(bus: Bus) -> int:
    """How many times the client has reconnected since it first connected."""
    return int(bus.nc.stats["reconnects"])


async def wait_reconnected(bus: Bus, poll_s: float = POLL_S) -> None:
    """Return once the client has reconnected (after a server restart or a failover), however brief the loss."""
    before = reconnects(bus)
    while reconnects(bus) == before:
        await asyncio.sleep(poll_s)
