"""The `rr` commands, one module per noun, each exposing `register(subparsers)`; see cli/main.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from eventbus.connection import DEFAULT_URL, Bus, connect
from servicekit.auth.credentials import connect_options, credentials_from_env
from servicekit.options import CommonOptions


@contextlib.asynccontextmanager
async def open_bus(options: CommonOptions, purpose: str = "cli") -> AsyncIterator[Bus]:
    """A connection for one command, closed when it is done; raises BusUnavailable naming the URL.

    With $RR_NATS_CREDS set, it authenticates with that file (`rr auth gen`), as the services do.
    """
    auth = connect_options(credentials_from_env())
    bus = await connect(options.nats_url or DEFAULT_URL, node_id=options.node_id, name=f"rr-{purpose}:{options.node_id}", **auth)
    try:
        yield bus
    finally:
        await bus.close()
