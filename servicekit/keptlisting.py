"""Kept snapshots of several projections loaded from one listing of the bucket, for a one-off read.

`load_state` lists the snapshot bucket on every call: a stream info and a consumer over every
kept object's metadata, which grows with the snapshots kept. A command that loads several
projections at once (a work item's timeline loads its index and its cluster start) lists the
bucket once and loads each from that listing; a projection the listing has no kept snapshot of
at all falls back to `load_state`, which also knows the older single snapshots and the bundle's
parts (any start gives the same fold, only the length of the read differs).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from eventbus.connection import Bus
from eventbus.snapshots import kept_index
from projections.base import Projection
from projections.snapshot import Loaded
from servicekit.snapshotting import Listing, load_kept, load_state

S = TypeVar("S", bound=Any)


async def list_kept(bus: Bus) -> Listing:
    """One listing of the snapshot bucket, for `load_listed` (raises BusError)."""
    return await kept_index(bus)


class KeptListing:
    """The bucket's listing for several loads of one command, made once, and only if one of them needs it."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._lock = asyncio.Lock()
        self._listing: Listing | None = None

    async def get(self) -> Listing:
        """The listing (raises BusError)."""
        async with self._lock:
            if self._listing is None:
                self._listing = await list_kept(self._bus)
        return self._listing


async def load_listed(bus: Bus, projection: Projection[S], who: str, listing: Listing, *,
                      not_after_seq: int) -> Loaded[S] | None:
    """The newest usable snapshot of `projection` listed not past `not_after_seq`; what `load_state` finds when none is listed.

    None when its listed ones are all past the bound or unreadable: the caller folds from sequence 1. A listing
    from `list_kept` also knows the delta snapshots' chains; a plain dict of sequences names full snapshots only.
    """
    kept = listing.get((projection.name, projection.version))
    if not kept:  # an older log's single snapshot, or a bundle part kept only inside the bundle
        return await load_state(bus, projection, who, not_after_seq=not_after_seq)
    return await load_kept(bus, projection, who, listing, not_after_seq)
