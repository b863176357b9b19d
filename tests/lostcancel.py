"""Faking the cancellation Python 3.11's asyncio.wait_for loses, around a real call to nats-server.

On 3.11, wait_for (under nats-py's publish, subscribe and requests) returns the server's reply
and drops a cancellation that lands with it; the task still counts it as requested
(`task.cancelling()`), but nothing stops it, and a TaskGroup or a term's stopper cancels once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class LosingACancel:
    """Wraps an async call: its first answer waits for the test's cancel, then returns as if wait_for lost it.

    Set on a class (monkeypatch.setattr(Class, "method", LosingACancel(Class.method))) it binds as a method does.
    """

    def __init__(self, real: Callable[..., Awaitable[T]], when: Callable[..., bool] = lambda *args, **kwargs: True) -> None:
        self._real = real
        self._when = when  # which calls count (their arguments, `self` first for a method)
        self.answered = asyncio.Event()  # the first call answered: cancel the task now
        self.calls = 0

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self if obj is None else functools.partial(self, obj)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = await self._real(*args, **kwargs)
        if not self._when(*args, **kwargs):
            return result
        self.calls += 1
        if self.calls == 1:
            self.answered.set()
            try:
                await asyncio.get_running_loop().create_future()  # the cancel arrives with the reply ...
            except asyncio.CancelledError:
                pass  # ... and wait_for returns the reply instead
        return result


async def stopped_on_one_cancel(task: asyncio.Future[Any], losing: LosingACancel, timeout: float = 10) -> bool:
    """Cancel `task` once, after its call lost the cancel; True when it then ended within `timeout`."""
    await asyncio.wait_for(losing.answered.wait(), timeout=timeout)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=timeout)
    return task in done


def the_task_running(function: Callable[..., Any]) -> asyncio.Task[Any]:
    """The one task whose coroutine is `function`'s (a loop a harness started and holds)."""
    running = [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", None) == function.__qualname__]
    assert len(running) == 1, f"{len(running)} tasks run {function.__qualname__}"
    return running[0]
