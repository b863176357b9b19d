"""A download's file writer: chunks written and hashed in order on one thread, the disk kept busy while they arrive.

The event loop only receives chunks (eventbus/objects.py `fetch_to_file`); writing, hashing and the
final fsync happen on this writer's own thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
from pathlib import Path
from typing import BinaryIO

WRITE_AHEAD = 16  # chunks handed to the writer thread before the reader waits for it
# A download asks the kernel to start writing its file to disk every this many bytes, so the
# final fsync waits for the last few MiB, not the whole file: the disk works while chunks arrive.
WRITEBACK_BYTES = 8 << 20


class ChunkWriter:
    """Writes and hashes chunks in order on one thread, so the event loop only receives."""

    def __init__(self, dest: Path, limit: int) -> None:
        self._dest = dest
        self._limit = limit  # more bytes than this is corrupt: stop writing garbage early
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rr-fetch")
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._written_back = 0  # bytes the kernel was asked to start writing to disk
        self._queue: list[asyncio.Future[None]] = []
        self._failure: BaseException | None = None

    def _open(self) -> BinaryIO:
        if self._file is None:
            self._file = open(self._dest, "wb")  # noqa: SIM115 - closed in close()
        return self._file

    def _write(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            return  # keep counting for the report, stop writing
        handle = self._open()
        handle.write(data)
        self._hash.update(data)
        if self._size - self._written_back >= WRITEBACK_BYTES:
            self._write_back(handle)

    def _write_back(self, handle: BinaryIO) -> None:
        # Start, without waiting for it, the disk write of the range written since the last call:
        # on Linux POSIX_FADV_DONTNEED begins writeback of dirty pages (and drops only pages
        # already clean, so the new file stays cached). Python has no sync_file_range; where
        # fadvise is missing the final fsync does all the writing, as before.
        if hasattr(os, "posix_fadvise"):
            handle.flush()
            os.posix_fadvise(handle.fileno(), self._written_back, self._size - self._written_back, os.POSIX_FADV_DONTNEED)
        self._written_back = self._size

    async def write(self, data: bytes) -> BaseException | None:
        """Queue a chunk; returns the writer's failure (e.g. ENOSPC), if it had one."""
        loop = asyncio.get_running_loop()
        self._queue.append(loop.run_in_executor(self._pool, self._write, data))
        while len(self._queue) > WRITE_AHEAD or (self._queue and self._queue[0].done()):
            try:
                await self._queue.pop(0)
            except OSError as exc:
                self._failure = self._failure or exc
        return self._failure

    def _sync(self) -> tuple[int, str]:
        handle = self._open()
        handle.flush()
        os.fsync(handle.fileno())
        return self._size, self._hash.hexdigest() if self._size <= self._limit else ""

    async def finish(self) -> tuple[int, str]:
        """Wait for every queued write, fsync; (bytes received, sha256 hex)."""
        while self._queue:
            await self._queue.pop(0)
        if self._failure is not None:
            raise self._failure
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._sync)

    def _close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._file is not None:
            self._file.close()

    async def close(self) -> None:
        """Let the thread finish what it holds, then close the file."""
        for future in self._queue:
            future.cancel()
        await asyncio.to_thread(self._close)
