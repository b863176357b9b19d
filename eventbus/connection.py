"""One NATS connection per process, with JetStream, and nats errors translated at the edge."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from eventbus.errors import BusUnavailable

log = logging.getLogger(__name__)

DEFAULT_URL = "nats://127.0.0.1:4222"


def split_servers(servers: str | list[str]) -> list[str]:
    """Accept a comma-separated list (as in RR_NATS_URL) or a list of URLs."""
    if isinstance(servers, str):
        servers = servers.split(",")
    urls = [s.strip() for s in servers if s.strip()]
    return urls or [DEFAULT_URL]


class Bus:
    """A connected NATS client with its JetStream context and the node it speaks for."""

    def __init__(self, nc: NatsClient, node_id: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.node_id = node_id

    @property
    def connected_url(self) -> str:
        """URL of the server this client is connected to now."""
        url = self.nc.connected_url
        return f"{url.scheme}://{url.netloc}" if url else ""

    async def close(self) -> None:
        """Flush what is buffered, then close; never hangs."""
        if self.nc.is_closed:
            return
        try:
            await asyncio.wait_for(self.nc.drain(), timeout=5)
        except (asyncio.TimeoutError, nats.errors.Error):
            await self.nc.close()


async def connect(
    servers: str | list[str],
    *,
    node_id: str,
    name: str | None = None,
    connect_timeout: float = 5.0,
    initial_attempts: int = 2,
    user_credentials: str | None = None,
    **options: Any,
) -> Bus:
    """Connect to NATS, reconnecting forever afterwards; raises BusUnavailable if no server answers."""
    urls = split_servers(servers)

    async def on_error(exc: Exception) -> None:
        log.warning("nats: %s", exc)

    async def on_disconnect() -> None:
        log.info("nats: disconnected")

    async def on_reconnect() -> None:
        log.info("nats: reconnected")

    try:
        nc = await nats.connect(
            servers=urls,
            name=name or f"rr:{node_id}",
            connect_timeout=connect_timeout,
            allow_reconnect=True,
            # A bounded first attempt: with -1 nats-py retries the initial connect forever.
            max_reconnect_attempts=initial_attempts,
            reconnect_time_wait=0.5,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            user_credentials=user_credentials,
            **options,
        )
    except (OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
        raise BusUnavailable(f"cannot reach NATS at {','.join(urls)}: {exc or type(exc).__name__}") from None
    # Once connected, a lost server is waited out for as long as it takes.
    nc.options["max_reconnect_attempts"] = -1
    return Bus(nc, node_id)
