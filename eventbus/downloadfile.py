"""The file a download writes into: around the page cache (O_DIRECT) where the filesystem allows it.

A buffered write copies every byte into the page cache, and the kernel's writeback later walks
those pages again; on the shared 2-core hosts that copy was the largest single cost of a download
after the network read (~20% of the client's CPU, ops/bench/README.md "Distribution: writing
around the page cache"). With O_DIRECT the disk reads the bytes straight from an aligned staging
buffer: one cheap copy into a buffer that stays in the CPU's cache, no page-cache pages to fill,
dirty or write back, and the final fsync has only metadata left to write. A filesystem that
refuses O_DIRECT (tmpfs before Linux 6.6, some network filesystems) gets buffered writes with early writeback.

Blocking: used on a download's writer thread (eventbus/objectwriter.py), never on the event loop.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from pathlib import Path

ALIGN = 4096  # O_DIRECT wants offsets, lengths and the buffer's address in multiples of the logical block size
STAGE_BYTES = 4 << 20  # bytes gathered before one direct write: a few chunks, few syscalls, the disk kept busy
# Buffered fallback: the kernel is asked to start writing the file every this many bytes, so the
# final fsync waits for the last few MiB, not the whole file: the disk works while chunks arrive.
WRITEBACK_BYTES = 8 << 20
_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux; elsewhere every download is buffered
_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP)  # how a filesystem says it does not do direct I/O


class DownloadFile:
    """A new file written in order, then fsynced; direct I/O when possible (`direct`), else buffered."""

    def __init__(self, path: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        self._fd = -1
        if _DIRECT:
            try:
                self._fd = os.open(path, flags | _DIRECT, 0o666)
            except OSError as exc:
                if exc.errno not in _REFUSED:
                    raise
        self.direct = self._fd >= 0
        if not self.direct:
            self._fd = os.open(path, flags, 0o666)
        self._stage = mmap.mmap(-1, STAGE_BYTES) if self.direct else None  # page-aligned, as O_DIRECT needs
        self._staged = 0  # bytes in the stage, not yet written
        self.size = 0  # bytes handed to write()
        self.written_back = 0  # buffered: bytes the kernel was asked to start writing to disk

    def write(self, data: bytes) -> None:
        """Append `data` (raises OSError, e.g. ENOSPC)."""
        self.size += len(data)
        if self._stage is None:
            _write_all(self._fd, memoryview(data))
            if self.size - self.written_back >= WRITEBACK_BYTES:
                self._write_back()
            return
        view, taken = memoryview(data), 0
        while taken < len(view):
            step = min(len(view) - taken, STAGE_BYTES - self._staged)
            self._stage[self._staged : self._staged + step] = view[taken : taken + step]
            self._staged += step
            taken += step
            if self._staged == STAGE_BYTES:
                self._write_stage(STAGE_BYTES)

    def sync(self) -> None:
        """Write what is staged and fsync: the file then holds exactly the bytes written, on disk."""
        if self._staged:
            # The tail goes out padded to the block size, and the padding is cut off again.
            self._write_stage(-(-self._staged // ALIGN) * ALIGN)
            os.ftruncate(self._fd, self.size)
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file (what was not synced may be lost)."""
        # The stage is unmapped when its last view goes, not closed here: a failed write's traceback
        # (kept as the download's failure) still holds a view of it, and mmap.close() would raise.
        self._stage = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _write_stage(self, length: int) -> None:
        assert self._stage is not None
        try:
            _write_all(self._fd, memoryview(self._stage)[:length])
        except OSError as exc:
            if exc.errno not in _REFUSED or not self.direct:
                raise
            # Opened with O_DIRECT but refused at the first write (a filesystem that checks late): buffered from here on.
            fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~_DIRECT)
            self.direct = False
            _write_all(self._fd, memoryview(self._stage)[:length])
        self._staged = 0

    def _write_back(self) -> None:
        # Start, without waiting for it, the disk write of the range written since the last call:
        # on Linux POSIX_FADV_DONTNEED begins writeback of dirty pages (and drops only pages
        # already clean, so the new file stays cached). Python has no sync_file_range; where
        # fadvise is missing the final fsync does all the writing.
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, self.written_back, self.size - self.written_back, os.POSIX_FADV_DONTNEED)
        self.written_back = self.size


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]
