"""Ending tasks for good: cancelled again until they end, because one cancel() is not always enough."""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)


async def stop_tasks(tasks: list[asyncio.Task[None]], within_s: float) -> list[asyncio.Task[None]]:
    """Cancel the tasks until they end, for at most `within_s`; returns those that refused (logged, left behind).

    Cancelled again every 50 ms: Python 3.11's asyncio.wait_for loses a cancellation that arrives
    just as the awaited call finishes, so one cancel() is not always enough. The caller's own
    cancellation is never swallowed: asyncio.wait raises it.
    """
    deadline = time.monotonic() + within_s
    pending = [t for t in tasks if not t.done()]
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.05)
        pending = [t for t in pending if not t.done()]
    for task in pending:
        log.error("%s ignored cancellation for %.0fs; left behind", task.get_name(), within_s)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # observed: its error was reported already, or it is the one being raised
    return pending
