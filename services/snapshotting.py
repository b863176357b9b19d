"""Loading and saving a projection's snapshot in the snapshot bucket: what a service starts from instead of sequence 1.

The encoding is pure (projections/snapshot.py) and runs in a thread; a state is immutable, so it
can be encoded there while the loop folds on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from eventbus.connection import Bus
from eventbus.events import utcnow
from eventbus.history import last_sequence
from eventbus.snapshots import load_snapshot, save_snapshot
from projections.base import Projection
from projections.snapshot import Loaded, decode_snapshot, encode_snapshot

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Any)


async def load_state(bus: Bus, projection: Projection[S], who: str) -> Loaded[S] | None:
    """The stored snapshot of `projection`, if one of this version exists and is not past the log's end."""
    data = await load_snapshot(bus, projection.name)
    if data is None:
        return None
    loaded = await asyncio.to_thread(decode_snapshot, projection, data)
    end = await last_sequence(bus)
    if loaded is None or loaded.header.last_seq > end:
        log.warning("%s: the stored snapshot is of another version or past the log's end; folding from seq 1", who)
        return None
    log.info("%s: starting from the snapshot at seq %d", who, loaded.header.last_seq)
    return loaded


async def save_state(bus: Bus, projection: Projection[S], state: S, *, replicas: int = 1) -> int:
    """Store `state` as the projection's snapshot; returns its size in bytes (raises BusError)."""
    data = await asyncio.to_thread(encode_snapshot, projection, state, utcnow())
    await save_snapshot(bus, projection.name, data, replicas=replicas)
    return len(data)
