"""Chunks of an object handed in order to one thread of their own, so the event loop only receives them.

The base of a download's consumers (eventbus/objectwriter.py writes a file, eventbus/snapshotinflate.py
inflates a snapshot): each chunk is queued to a single worker thread as it arrives, up to WRITE_AHEAD
ahead of it, and the reader waits only when the thread falls that far behind. What the thread does with
a chunk (`_take`) and at the end (`_end`) is the subclass's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Generic, TypeVar

WRITE_AHEAD = 16  # chunks handed to the thread before the reader waits for it
R = TypeVar("R")


class ChunkThread(Generic[R]):
    """Takes chunks in order on one thread; `finish` returns what `_end` makes of them."""

    _failures: tuple[type[BaseException], ...] = (OSError,)  # a chunk's failure kept for the reader, not raised at once

    def __init__(self, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self._queue: list[asyncio.Future[None]] = []
        self._failure: BaseException | None = None

    def _take(self, data: bytes) -> None:
        raise NotImplementedError

    def _end(self) -> R:
        raise NotImplementedError

    def _close(self) -> None:
        self._pool.shutdown(wait=True)

    async def write(self, data: bytes) -> BaseException | None:
        """Queue a chunk; returns the thread's failure (e.g. ENOSPC), if it had one."""
        loop = asyncio.get_running_loop()
        self._queue.append(loop.run_in_executor(self._pool, self._take, data))
        while len(self._queue) > WRITE_AHEAD or (self._queue and self._queue[0].done()):
            try:
                await self._queue.pop(0)
            except self._failures as exc:
                self._failure = self._failure or exc
        return self._failure

    async def finish(self) -> R:
        """Wait for every queued chunk, then `_end` on the thread; raises the first chunk's failure."""
        while self._queue:
            await self._queue.pop(0)
        if self._failure is not None:
            raise self._failure
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._end)

    async def close(self) -> None:
        """Let the thread finish what it holds, then release what `_close` releases."""
        for future in self._queue:
            future.cancel()
        await asyncio.to_thread(self._close)
