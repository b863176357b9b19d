"""Whether this node's worker takes assignments yet: `rr up` starts the agent only then.

A worker first started on a node creates its assignments consumer to deliver only what is
assigned from then on. The leader assigns to a node as soon as its agent's first beat makes it
alive; `rr up` starts every service at once, so an agent that beat before the worker's consumer
existed had its node's first assignments stored where that worker never looks (they stayed
assigned and never ran). The agent's first beat used to come seconds late (it imported torch),
which hid this; now `rr up` holds the agent back until the consumer exists, or a bound passes.
"""

from __future__ import annotations

import asyncio
import logging

from eventbus.connection import connect
from eventbus.consumerlag import consumer_lag
from eventbus.streams import EVENTS_STREAM
from servicekit.auth.permissions import node_consumer

log = logging.getLogger(__name__)

WORKER_WAIT_S = 60.0  # past this the agent starts anyway (a worker that cannot start must not keep the node unseen)


async def wait_worker_listening(nats_url: str, node_id: str, *, timeout_s: float = WORKER_WAIT_S, poll_s: float = 0.1) -> bool:
    """Return True once `node_id`'s worker assignments consumer exists (at once after its first run), False after `timeout_s`."""
    durable = node_consumer("worker", node_id)
    bus = await connect(nats_url, node_id=node_id, name=f"rr-up-wait:{node_id}")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await consumer_lag(bus, EVENTS_STREAM, durable) is None:
            if loop.time() >= deadline:
                log.warning("the worker's consumer %s did not appear within %.0fs; starting the agent anyway", durable, timeout_s)
                return False
            await asyncio.sleep(poll_s)
        return True
    finally:
        await bus.close()
