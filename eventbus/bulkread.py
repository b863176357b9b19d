"""Reading large messages (object chunks) through nats-py with one copy and no fresh pages per chunk.

Profiled on object downloads (ops/bench/README.md, "Distribution"): nats-py's parser takes each
payload out of its buffer as `bytes(self.buf[a:b])`, a bytearray slice copied once more into
bytes, and glibc hands the ~1 MiB blocks these copies need back to the kernel when they are
freed (its trim and mmap thresholds adapt to the largest block seen), so the next chunk's copy
lands in fresh pages, a page fault every 4 KiB. Parsing 1 MiB chunks alone, in a fresh process,
cost ~1.6-1.8 ms of CPU per MiB that way, 0.36-0.42 ms with both changes here (a long-lived
process, whose glibc thresholds have grown, pays less of it). Neither changes what is read or
how: the parser, its protocol handling and the transport stay nats-py's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from typing import SupportsIndex, overload

from nats.aio.client import Client as NatsClient

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap, whose freed memory is reused instead of unmapped
# (setting it also stops glibc from moving the threshold, and with it the trim threshold, by itself).
MMAP_THRESHOLD_BYTES = 32 << 20
# Freed memory kept at the top of the heap before it goes back to the kernel: a few downloads'
# chunks in flight (objectwriter.WRITE_AHEAD of 1 MiB each) fit without being faulted in again.
TRIM_THRESHOLD_BYTES = 128 << 20


class PayloadBuffer(bytearray):
    """nats-py's parser buffer whose slices are bytes, copied once (a plain bytearray slice is copied again by `bytes()`)."""

    @overload
    def __getitem__(self, key: SupportsIndex) -> int: ...
    @overload
    def __getitem__(self, key: slice) -> bytearray: ...
    def __getitem__(self, key: SupportsIndex | slice) -> int | bytearray:
        if not isinstance(key, slice):
            return super().__getitem__(key)
        # The views are released before the parser deletes what it read (a live export would refuse the delete).
        with memoryview(self) as view, view[key] as part:
            # bytes, not bytearray: the parser's bytes() of it is then the same object, no second copy.
            return part.tobytes()  # type: ignore[return-value]


def read_payloads_with_one_copy(nc: NatsClient) -> bool:
    """Give the client's parser a PayloadBuffer with what it holds (nats-py makes a plain one again on reconnect).

    Returns whether the parser has one now; a nats-py whose parser keeps no bytearray `buf` is left as it is.
    """
    parser = getattr(nc, "_ps", None)
    buf = getattr(parser, "buf", None)
    if type(buf) is bytearray:
        # Safe between two steps of the parser: it runs on this loop and looks the buffer up afresh each step.
        parser.buf = PayloadBuffer(buf)  # type: ignore[union-attr]
    return isinstance(getattr(parser, "buf", None), PayloadBuffer)


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc keep freed chunk-sized blocks for reuse instead of unmapping them; False where it is not glibc.

    Process-wide and done once: the process keeps up to TRIM_THRESHOLD_BYTES of freed heap mapped.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
