"""Waiting on several things at once, for a loop that sleeps until news, a timer or its stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def until_first(*waits: Awaitable[object]) -> None:
    """Return once the first of `waits` finishes; the others are cancelled (all of them, if this is cancelled).

    What the first one returned or raised is not looked at: the caller looks at the world again
    (its fold, its timers, its stop flag) rather than at which wait ended.
    """
    futures = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
