"""Pausing Python's cyclic garbage collector while a large state is built: a snapshot decoded, the log folded.

Decoding a bundle snapshot creates a million objects, none of them garbage; every 700 new
objects the collector runs, and its older generations walk everything built so far: a third of
the decode's time. Folding the log from sequence 1 (history.replay) is the same: the folds'
states hold no reference cycles (frozen Structs, tuples, dicts, tries), and the collector's
passes over them were ~15% of a rebuild's CPU. Reference counting still frees everything as
usual; cyclic garbage made meanwhile elsewhere in the process waits for the pause to end.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_holders = 0  # pauses in progress (decodes may run in several threads at once)
_was_enabled = False


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic collector off for the block, back as it was once the last concurrent pause ends."""
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()


def without_gc(build: Callable[..., T], *args: object) -> T:
    """`build(*args)` with the cyclic collector paused (for asyncio.to_thread)."""
    with paused_gc():
        return build(*args)
