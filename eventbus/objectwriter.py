"""A download's file writer: chunks written and hashed in order on one thread, the disk kept busy while they arrive.

The event loop only receives chunks (eventbus/objects.py `fetch_to_file`); writing, hashing and the
final fsync happen on this writer's own thread, into a DownloadFile (eventbus/downloadfile.py:
around the page cache where the filesystem allows it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
from pathlib import Path

from eventbus.downloadfile import DownloadFile

WRITE_AHEAD = 16  # chunks handed to the writer thread before the reader waits for it


class ChunkWriter:
    """Writes and hashes chunks in order on one thread, so the event loop only receives."""

    def __init__(self, dest: Path, limit: int) -> None:
        self._dest = dest
        self._limit = limit  # more bytes than this is corrupt: stop writing garbage early
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rr-fetch")
        self._file: DownloadFile | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._queue: list[asyncio.Future[None]] = []
        self._failure: BaseException | None = None

    def _open(self) -> DownloadFile:
        if self._file is None:
            self._file = DownloadFile(self._dest)  # closed in close()
        return self._file

    def _write(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            return  # keep counting for the report, stop writing
        self._open().write(data)
        self._hash.update(data)

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
        self._open().sync()
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
