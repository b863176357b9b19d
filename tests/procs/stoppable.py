"""A background child's main coroutine, cancelled by SIGTERM so that its `finally` blocks stop what it started."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def cancelled_by_sigterm(main: Coroutine[Any, Any, T]) -> T:
    """Run `main`; SIGTERM (tests/background_runs.py ending a run nobody asked for) cancels it instead of killing the process."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await task
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
