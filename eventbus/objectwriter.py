"""A download's file writer: chunks written and hashed in order on one thread, the disk kept busy while they arrive.

The event loop only receives chunks (eventbus/objects.py `fetch_to_file`); writing, hashing and the
final fsync happen on this writer's own thread.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from eventbus.chunkthread import ChunkThread

# A download asks the kernel to start writing its file to disk every this many bytes, so the
# final fsync waits for the last few MiB, not the whole file: the disk works while chunks arrive.
WRITEBACK_BYTES = 8 << 20


class ChunkWriter(ChunkThread[tuple[int, str]]):
    """Writes and hashes chunks in order on one thread, so the event loop only receives; `finish` fsyncs and
    returns (bytes received, sha256 hex)."""

    def __init__(self, dest: Path, limit: int) -> None:
        super().__init__("rr-fetch")
        self._dest = dest
        self._limit = limit  # more bytes than this is corrupt: stop writing garbage early
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._written_back = 0  # bytes the kernel was asked to start writing to disk

    def _open(self) -> BinaryIO:
        if self._file is None:
            self._file = open(self._dest, "wb")  # noqa: SIM115 - closed in close()
        return self._file

    def _take(self, data: bytes) -> None:
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

    def _end(self) -> tuple[int, str]:
        handle = self._open()
        handle.flush()
        os.fsync(handle.fileno())
        return self._size, self._hash.hexdigest() if self._size <= self._limit else ""

    def _close(self) -> None:
        super()._close()
        if self._file is not None:
            self._file.close()
