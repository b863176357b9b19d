"""The leaders' loop health for /status and the dashboard: read from the lease keys, which the event log does not carry.

Each lease renewal carries the leader's loops and their health (cluster/leadership/supervisor.py);
this loop reads them every few seconds so the dashboard shows a leader with loops down as unhealthy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cluster.leadership.status import loops_down
from eventbus.connection import Bus
from eventbus.errors import BusError
from eventbus.leases import LeaseBucket
from eventbus.tasks import raise_if_cancelled

log = logging.getLogger(__name__)

READ_EVERY_S = 2.0
ROLES = ("scheduler",)


async def watch_loops_down(bus: Bus, bucket_name: str, store: Callable[[dict[str, list[str]]], None],
                           every_s: float = READ_EVERY_S) -> None:
    """Every `every_s`, hand `store` each role's leader loops not running (a role whose lease is unreadable keeps its last)."""
    bucket = LeaseBucket(bus, bucket_name)
    down: dict[str, list[str]] = {}
    while True:
        for role in ROLES:
            try:
                record = await bucket.read(role, timeout=every_s)
            except BusError as exc:
                log.debug("api: lease %s unreadable: %s", role, exc)
                continue
            down[role] = loops_down(record.holder.loops) if record.holder is not None else []
        store(dict(down))
        raise_if_cancelled()  # a stop that a read's wait_for lost (Python 3.11): the API's TaskGroup waits on this
        await asyncio.sleep(every_s)
