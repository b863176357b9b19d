"""Ending tasks for good: cancelled again until they end, because one cancel() is not always enough."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NoReturn

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


async def wait_cancelled() -> NoReturn:
    """Wait until the current task is cancelled, at once when a cancellation was requested and lost on the way.

    On Python 3.11 asyncio.wait_for (under nats-py's requests: a subscribe, a publish) returns
    its reply and drops a cancellation that arrives with it; the task still counts it as
    requested. A wait for the next cancellation would then last forever: a TaskGroup cancels
    its children once.
    """
    raise_if_cancelled()
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable: the future is never resolved")


def raise_if_cancelled() -> None:
    """Raise CancelledError when the current task was asked to stop but a call lost it (see `wait_cancelled`).

    A loop that runs until cancelled calls it once a round: otherwise a round's publish that
    lost the cancellation keeps the loop going, and the one cancel its stopper sends is spent.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
