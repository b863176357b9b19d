"""Loading and saving a projection's snapshots in the snapshot bucket: what a service starts from instead of sequence 1.

Several are kept per projection (projections/snapshotchains.py decides which): a service starts
from the newest usable one plus the log's tail, a point-in-time read from the newest one at or
before its point. Between full snapshots a writer saves deltas against its previous one
(projections/snapshotdelta.py); a kept point is then its chain's base and deltas, loaded together.
The encoding is pure (projections/snapshot.py) and runs in a thread; a state is immutable, so it
can be encoded there while the loop folds on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec

from eventbus.connection import Bus
from eventbus.errors import BusError
from eventbus.events import utcnow
from eventbus.gcpause import without_gc
from eventbus.history import first_sequence, last_sequence
from eventbus.objectdelete import delete_object
from eventbus.snapshots import (
    SNAPSHOT_BUCKET,
    KeptIndex,
    KeptObject,
    delta_name,
    kept_index,
    kept_listing,
    kept_name,
    load_snapshot,
    save_kept,
)
from projections import bundle
from projections.base import Folder, Projection
from projections.snapshot import Loaded, decode_snapshot, encode_snapshot
from projections.snapshotchains import chain, delta_due, plan_prune
from projections.snapshotdelta import apply_chain, encode_delta
from projections.snapshotplan import GIB, SnapshotSettings, due, newest_at_or_before

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Any)

TRIED = 3  # kept snapshots tried, newest first, before folding from seq 1 (an unreadable one is skipped)


Listing = dict[tuple[str, int], list[int]]  # kept sequences by (projection name, version), oldest first


async def load_state(bus: Bus, projection: Projection[S], who: str, *, not_after_seq: int | None = None,
                     index: Listing | None = None) -> Loaded[S] | None:
    """The newest usable snapshot of `projection` not past `not_after_seq` (default: the log's end).

    A part of the bundle (models, data, cluster, work, elo) may also start from the bundle's own
    snapshot (the API saves it), whichever of the two is newer. One listing of the bucket serves
    both; `index`, when given, is that listing (kept_index) and `not_after_seq` is not past the log's end.
    """
    return (await load_states(bus, [projection], who, not_after_seq=not_after_seq, index=index))[0]


async def load_states(bus: Bus, projections: Sequence[Projection[Any]], who: str, *, not_after_seq: int | None = None,
                      index: Listing | None = None) -> list[Loaded[Any] | None]:
    """What `load_state` gives for each of `projections`, from one listing and at most one load of the bundle.

    A service keeps several bundle parts (the sync planner: data, cluster and taint); each loading the
    whole bundle on its own would fetch, inflate and decode it once per part (~46 MB of msgpack at 2M records).
    """
    listing: Listing
    if index is None:
        end, listing = await asyncio.gather(last_sequence(bus), kept_index(bus))
        bound = end if not_after_seq is None else min(not_after_seq, end)
    else:
        listing, bound = index, not_after_seq if not_after_seq is not None else await last_sequence(bus)
    whole = _SharedBundle(bus, who, bound, listing)
    return [await _load_part(bus, projection, who, bound, listing, whole) for projection in projections]


class _SharedBundle:
    """The bundle's newest usable snapshot not past `bound`, loaded the first time a part asks for it, then kept.

    Loaded only for a part whose own snapshots are older or unreadable: it holds every work item
    ever added (a year: ~1.6 GB of msgpack).
    """

    def __init__(self, bus: Bus, who: str, bound: int, listing: Listing) -> None:
        self._args = (bus, bundle.PROJECTION, who, bound, listing)
        self._loaded: Loaded[bundle.ProjectionSet] | None = None
        self._tried = False

    async def part(self, name: str, projection: Projection[S]) -> Loaded[S] | None:
        """Part `name` of the bundle as a snapshot of `projection`; None when the bundle has no usable snapshot."""
        if not self._tried:
            self._tried = True
            whole = await _load_own(*self._args)
            self._loaded = None if whole is None else Loaded(whole.header, bundle.aligned(whole.state))
        if self._loaded is None:
            return None
        header = msgspec.structs.replace(self._loaded.header, projection=projection.name, version=projection.version)
        return Loaded(header, getattr(self._loaded.state, name))


async def _load_part(bus: Bus, projection: Projection[S], who: str, bound: int, listing: Listing,
                     whole: _SharedBundle) -> Loaded[S] | None:
    # Of its own snapshots and the bundle's, the one listed newer is loaded first (ties: its own,
    # the smaller); the other only when that one was unreadable back to one older than the other's newest.
    part = bundle.part_name(projection)
    if part is None or projection is bundle.PROJECTION:
        return await _load_own(bus, projection, who, bound, listing)
    own_seq = newest_listed(listing, projection, bound)
    whole_seq = newest_listed(listing, bundle.PROJECTION, bound)
    loaders = [functools.partial(_load_own, bus, projection, who, bound, listing), functools.partial(whole.part, part, projection)]
    (first, second), other_seq = (loaders, whole_seq) if own_seq >= whole_seq else (loaders[::-1], own_seq)
    loaded = await first()
    if loaded is not None and loaded.header.last_seq >= other_seq:
        return loaded
    other = await second()
    if loaded is None or (other is not None and other.header.last_seq > loaded.header.last_seq):
        return other
    return loaded


def newest_listed(listing: Listing, projection: Projection[Any], bound: int) -> int:
    """The position of the newest listed snapshot of `projection` not past `bound`; 0 when none is listed."""
    return next(iter(newest_at_or_before(listing.get((projection.name, projection.version), []), bound)), 0)


async def _load_own(bus: Bus, projection: Projection[S], who: str, bound: int, index: Listing) -> Loaded[S] | None:
    seqs = index.get((projection.name, projection.version), [])
    loaded = await load_kept(bus, projection, who, index, bound)
    if loaded is not None:
        return loaded
    if not seqs:
        others = sorted({version for name, version in index if name == projection.name} - {projection.version})
        if others:  # a new version of the fold: its old snapshots are another shape, it rebuilds from the log
            log.info("%s: the kept snapshots of %s are of version %s, this is version %d: folding it from the log",
                     who, projection.name, ", ".join(map(str, others)), projection.version)
    return await _load_single(bus, projection, who, bound)


def _points(index: Listing, projection: Projection[Any]) -> dict[int, int]:
    key = (projection.name, projection.version)
    if isinstance(index, KeptIndex):
        return index.points(key)
    return dict.fromkeys(index.get(key, []), 0)  # a plain listing: full snapshots only


async def load_kept(bus: Bus, projection: Projection[S], who: str, index: Listing, bound: int) -> Loaded[S] | None:
    """The newest usable kept point of `projection` not past `bound`: its base and then its deltas, in order.

    A delta that is missing or does not apply ends its chain at the point before it (older, never
    wrong); a base that does not read makes the points on it unusable, and an older chain is tried.
    At most TRIED bases are read.
    """
    points = _points(index, projection)
    failed: set[int] = set()
    for seq in newest_at_or_before(list(points), bound):
        links = chain(points, seq)
        if links is None or links[0] in failed:
            continue
        loaded = await _load_chain(bus, projection, who, links, points)
        if loaded is not None:
            log.info("%s: starting %s from the snapshot at seq %d (%d deltas applied)", who, projection.name,
                     loaded.header.last_seq, links.index(loaded.header.last_seq))
            return loaded
        log.warning("%s: the snapshot of %s at seq %d is unreadable; trying an older one", who, projection.name, links[0])
        failed.add(links[0])
        if len(failed) >= TRIED:
            break
    return None


async def _load_chain(bus: Bus, projection: Projection[S], who: str, links: list[int],
                      points: dict[int, int]) -> Loaded[S] | None:
    # The deltas (small) are fetched together with the base, one round trip's wait for all of them.
    names = [_name(projection, links[0]), *(delta_name(projection.name, projection.version, s, points[s]) for s in links[1:])]
    data, *deltas = await asyncio.gather(*(load_snapshot(bus, name) for name in names))
    loaded = None if data is None else await asyncio.to_thread(without_gc, decode_snapshot, projection, data)
    if loaded is None or not deltas:
        return loaded
    # Composed and applied at once: each key of the chain set once (projections/snapshotdelta.py).
    moved, applied = await asyncio.to_thread(without_gc, apply_chain, projection, loaded.state, deltas)
    if applied < len(deltas):
        log.warning("%s: the delta snapshot of %s at seq %d is missing or unreadable; starting from seq %d",
                    who, projection.name, links[1 + applied], links[applied])
    return moved if moved is not None else loaded


async def _load_single(bus: Bus, projection: Projection[S], who: str, bound: int) -> Loaded[S] | None:
    # The one snapshot per projection stored before several were kept: read until a kept one exists.
    data = await load_snapshot(bus, projection.name)
    if data is None:
        return None
    loaded = await asyncio.to_thread(without_gc, decode_snapshot, projection, data)
    if loaded is None or loaded.header.last_seq > bound:
        return None
    log.info("%s: starting %s from the snapshot at seq %d", who, projection.name, loaded.header.last_seq)
    return loaded


def _name(projection: Projection[Any], seq: int) -> str:
    return kept_name(projection.name, projection.version, seq)


async def save_state(bus: Bus, projection: Projection[S], state: S, *, replicas: int = 1,
                     settings: SnapshotSettings = SnapshotSettings()) -> int:
    """Keep `state` as a full snapshot of the projection and delete those no longer needed; returns its size (raises BusError)."""
    return (await save_point(bus, projection, state, replicas=replicas, settings=settings))[0]


async def save_point(bus: Bus, projection: Projection[S], state: S, *, replicas: int = 1,
                     settings: SnapshotSettings = SnapshotSettings(), previous: Any = None) -> tuple[int, Pruning]:
    """Keep `state` as a snapshot of the projection, then prune; returns its size and what the prune did (raises BusError).

    With `previous` (the state of a snapshot of this projection still kept), a delta against it.
    """
    size = await _store(bus, projection, state, replicas=replicas, previous=previous)
    return size, await prune(bus, projection, settings)


async def _store(bus: Bus, projection: Projection[S], state: S, *, replicas: int, previous: Any) -> int:
    # The snapshot (a delta against `previous` when set) stored, not yet pruned; returns its encoded size.
    if previous is None:
        data = await asyncio.to_thread(encode_snapshot, projection, state, utcnow())
    else:
        data = await asyncio.to_thread(encode_delta, projection, previous, state, utcnow())
    prev = 0 if previous is None else previous.last_seq
    await save_kept(bus, projection.name, projection.version, state.last_seq, data, replicas=replicas, prev=prev)
    return len(data)


class Pruning(NamedTuple):
    """What a prune deleted of one projection's current version, and the bucket's bytes it left."""

    dropped: list[int]
    bucket_bytes: int


class BucketListing:
    """One listing of the snapshot bucket (and the log's first sequence), kept current as prunes delete from it.

    A listing reads every object's entry (~0.14 ms an object at load 7 here), so a writer that
    saves several projections at one point prunes them all from one listing: at a year's log with
    deltas, a listing per save was O(objects kept) nine times per point (bench_forensics).
    """

    def __init__(self, kept: list[KeptObject], bucket_bytes: int, first_seq: int) -> None:
        self.kept = kept
        self.bucket_bytes = bucket_bytes  # every object's, kept snapshot or not
        self.first_seq = first_seq

    @classmethod
    async def read(cls, bus: Bus) -> BucketListing:
        """The bucket as it is now."""
        kept, bucket_bytes = await kept_listing(bus)
        return cls(kept, bucket_bytes, await first_sequence(bus))

    def deleted(self, names: set[str]) -> None:
        """Forget the objects deleted since the listing was read."""
        self.bucket_bytes -= sum(k.size for k in self.kept if k.object_name in names)
        self.kept = [k for k in self.kept if k.object_name not in names]


async def prune(bus: Bus, projection: Projection[Any], settings: SnapshotSettings, listing: BucketListing | None = None) -> Pruning:
    """Delete the kept snapshots of `projection` that are of another version, no longer needed or thinned out.

    Thinning (projections/snapshotchains.py) only starts once the bucket is over
    `snapshots.max_gib`: then this projection keeps its share of the budget, every snapshot of
    the newest records and fewer further back, so the store stays within the budget as the log
    grows; a delta goes whenever a link of its chain goes. `listing`: the bucket as read after the
    newest save (updated here with what this deletes); read now when not given.
    """
    listing = listing or await BucketListing.read(bus)
    mine = [k for k in listing.kept if k.name == projection.name]
    doomed = [k.object_name for k in mine if k.version != projection.version]
    by_seq: dict[int, KeptObject] = {}
    for kept in sorted((k for k in mine if k.version == projection.version), key=lambda k: (k.seq, k.prev)):
        if kept.seq in by_seq:
            doomed.append(kept.object_name)  # a delta where a full snapshot stands: never the one loaded
        else:
            by_seq[kept.seq] = kept
    points = {seq: kept.prev for seq, kept in by_seq.items()}
    other = listing.bucket_bytes - sum(k.size for k in mine)
    plan = plan_prune(points, {seq: k.size for seq, k in by_seq.items()}, listing.first_seq, other, settings)
    if plan.density is not None:
        log.info("%s: snapshots thinned to %d per doubling past the newest %d x %d records to fit snapshots.max_gib "
                 "(%g GiB) and max_kept; a point folds at most %d records past one", projection.name,
                 plan.density.per_doubling, plan.density.dense, settings.every_events, settings.max_gib, plan.worst)
    doomed += [by_seq[seq].object_name for seq in plan.dropped]
    for name in doomed:
        await delete_object(bus, SNAPSHOT_BUCKET, name)
    listing.deleted(set(doomed))
    return Pruning(plan.dropped, listing.bucket_bytes)


class _Chain:
    """What a writer saved last of one projection, so that its next snapshot can be a delta against it."""

    def __init__(self) -> None:
        self.state: Any = None  # of the last snapshot saved; None: the next is a base
        self.links = 0
        self.chain_bytes = 0
        self.base_bytes = 0
        self.bucket_bytes = 0  # after this writer's last prune; 0 before its first save

    def previous(self, settings: SnapshotSettings) -> Any:
        """The state the next snapshot is a delta against; None when it is to be a base.

        While the bucket holds under `delta_over` of the budget, full snapshots: they fit, and a
        point loads one object instead of a base and its deltas.
        """
        if self.bucket_bytes < settings.delta_over * settings.max_gib * GIB:
            return None
        if self.state is None or not delta_due(self.links, self.chain_bytes, self.base_bytes, most_links=settings.delta_links,
                                               fraction=settings.delta_fraction, min_bytes=settings.delta_min_bytes):
            return None
        return self.state

    def saved(self, state: Any, size: int, delta: bool, pruning: Pruning) -> None:
        """Record a save; a chain whose newest point was pruned at once starts again with a base."""
        self.bucket_bytes = pruning.bucket_bytes
        if delta:
            self.links, self.chain_bytes = self.links + 1, self.chain_bytes + size
        else:
            self.links, self.chain_bytes, self.base_bytes = 0, 0, size
        self.state = None if state.last_seq in pruning.dropped else state


class ChainSaver:
    """Saves one writer's snapshots: each projection's first whole, then deltas against the previous one saved
    (snapshots.delta_links, delta_fraction, delta_min_bytes), then whole again. A new saver (a restart) starts whole."""

    def __init__(self, bus: Bus, settings: SnapshotSettings, *, replicas: int = 1) -> None:
        self._bus = bus
        self.settings = settings
        self._replicas = replicas
        self._chains: dict[str, _Chain] = {}

        self.listing: BucketListing | None = None  # the bucket after the last prune (stored sizes, for budgets)

    async def save(self, projection: Projection[Any], state: Any) -> tuple[int, bool]:
        """Save `state` and prune; its encoded size and whether it was a delta (raises BusError; the next try repeats it)."""
        (saved,) = await self.save_all([(projection, state)])
        return saved

    async def save_all(self, states: Sequence[tuple[Projection[Any], Any]]) -> list[tuple[int, bool]]:
        """Save each state, then prune each projection from one listing of the bucket; as `save` for each."""
        stored = []
        for projection, state in states:
            previous = self._chains.setdefault(projection.name, _Chain()).previous(self.settings)
            size = await _store(self._bus, projection, state, replicas=self._replicas, previous=previous)
            stored.append((projection, state, size, previous is not None))
        listing = await BucketListing.read(self._bus)
        for projection, state, size, delta in stored:
            self._chains[projection.name].saved(state, size, delta, await prune(self._bus, projection, self.settings, listing))
        self.listing = listing
        return [(size, delta) for _, _, size, delta in stored]


# A part of a folder's state kept as a snapshot of its own projection (the timeline's index in the
# API's bundle, which `rr timeline --work` loads without the bundle): the projection and its getter.
Part = tuple[Projection[Any], Callable[[Any], Any]]


class SnapshotWriter:
    """Saves the states of several folders every `every_events` records or `every_s` seconds (one follower's folds)."""

    def __init__(self, bus: Bus, folders: Sequence[Folder[Any]], settings: SnapshotSettings, who: str, *, replicas: int = 1,
                 parts: Sequence[Part] = (), after_save: Callable[[Any], Awaitable[object]] | None = None) -> None:
        """`parts`: saved after the first folder's state, from it; `after_save(state)`: then called with that state."""
        self._bus = bus
        self._folders = list(folders)
        self.settings = settings
        self._who = who
        self._replicas = replicas
        self._parts = list(parts)
        self._after_save = after_save
        self.saved_seq = 0  # position of the newest snapshot saved; 0: none
        self._folded = 0
        self._since = time.monotonic()
        self.saved = 0
        self.failed = 0
        self._saver = ChainSaver(bus, settings, replicas=replicas)

    def folded(self, count: int = 1) -> bool:
        """Count records folded since the last save; True when a save is due."""
        self._folded += count
        return self.is_due()

    def is_due(self) -> bool:
        """Whether the next `save_if_due` would save."""
        return due(self._folded, time.monotonic() - self._since, self.settings)

    async def save_if_due(self) -> bool:
        """Save every folder's state when due; a failure is logged and retried next time. True when saved."""
        if not self.is_due():
            return False
        self._folded, self._since = 0, time.monotonic()
        for index, folder in enumerate(self._folders):
            state = folder.projection.finished(folder.state)
            parts = [(projection, part(state)) for projection, part in self._parts] if index == 0 else []
            if await self._save([(folder.projection, state), *parts]) and index == 0:  # pruned from one listing
                await self._after(state)
        return True

    async def _after(self, state: Any) -> None:
        if self._after_save is None:
            return
        try:
            await self._after_save(state)
        except BusError as exc:  # the next save writes what this one could not
            self.failed += 1
            log.warning("%s: what follows the snapshot at seq %d not written: %s", self._who, state.last_seq, exc)

    async def _save(self, states: list[tuple[Projection[Any], Any]]) -> bool:
        seq = states[0][1].last_seq
        try:
            saved = await self._saver.save_all(states)
        except BusError as exc:
            self.failed += 1
            names = ", ".join(projection.name for projection, _ in states)
            log.warning("%s: snapshots of %s at seq %d not saved: %s", self._who, names, seq, exc)
            return False
        self.saved += len(saved)
        self.saved_seq = max(self.saved_seq, seq)
        for (projection, _), (size, delta) in zip(states, saved, strict=True):
            log.info("%s: %s snapshot of %s saved at seq %d (%d bytes)", self._who, "delta" if delta else "full",
                     projection.name, seq, size)
        return True
