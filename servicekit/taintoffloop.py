"""What a taint fold's quarantines taint, for a service: a closure not already known is computed in a thread.

While a quarantine is in force the closure goes over the whole lineage (seconds at a year's log);
on the event loop that would stall heartbeats, leases and replies. `projections.taint` keeps the
last closures, so the thread runs only when the quarantines or the lineage changed. The closure
builds a dict per tainted output and none is cyclic garbage: the collector is paused meanwhile
(eventbus/gcpause.py), which halves it at 100k batches (ops/bench/README.md).
"""

from __future__ import annotations

import asyncio

from eventbus.gcpause import without_gc
from projections import taint


async def tainted_off_loop(state: taint.TaintState) -> taint.Tainted:
    """What the state's quarantines taint: at once when known (none in force, or unchanged), else from a thread."""
    known = taint.known_tainted(state)
    if known is not None:
        return known
    return await asyncio.to_thread(without_gc, taint.tainted, state)
