"""The timeline's work-ref index kept one KV entry per work item, beside its snapshots: a lookup costs one item's entry.

The index's snapshot is one object holding every item (74k at 1M records, ~1.6M a year): a
`rr timeline --work` that loads it fetches and decodes them all to read one. The API writes, each
time it saves its snapshots and every few hundred records between saves, the entries of the items
whose refs changed since its last write and then the position they are complete to
(`workrefs.Position`, with the kept `timeline-cluster` snapshots, so that a timeline need not list
the snapshot bucket); a reader gets the position and its item's entry (two direct gets at once),
and folds the results after them as after a snapshot: at most those few hundred records' results.
The bucket is a cache: without a position (an older cluster, a new bucket) readers load the snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import msgspec

from eventbus.connection import Bus
from eventbus.errors import BucketMissing, BusError, BusUnavailable
from eventbus.kventries import advance_entries, ensure_entries_bucket, entry_key, get_entry
from eventbus.snapshots import kept_snapshots
from eventbus.subjects import WORKREFS_BUCKET
from projections import timelinestart, workrefs
from projections.workrefs import Entry, Position, WorkRefs

log = logging.getLogger(__name__)

BUCKET = WORKREFS_BUCKET
DESCRIPTION = "rr timeline's work-ref index, one entry per work item (a cache: deleting it costs one full write)"
POSITION_KEY = "_position"  # never an item's key: those start with a letter, a digit or "_b64_"

_entry_decoder = msgspec.msgpack.Decoder(Entry)
_position_decoder = msgspec.msgpack.Decoder(Position)


def encoded_entries(state: WorkRefs, written: WorkRefs | None) -> list[tuple[str, bytes]]:
    """The (key, value) pairs of the items changed since `written` (every item when None); CPU-bound: run it in a thread."""
    return [(entry_key(work_id), msgspec.msgpack.encode(entry)) for work_id, entry in workrefs.changed_entries(state, written)]


class EntryWriter:
    """Writes the index's changed entries, then their position: after each snapshot save, and between them (`relist=False`)."""

    def __init__(self, bus: Bus, *, replicas: int = 1) -> None:
        self._bus = bus
        self._replicas = replicas
        self._started: WorkRefs = WorkRefs()  # the state the fold resumed from
        self._written: WorkRefs | None = None  # the state written last; None: nothing yet by this writer
        self._fresh = False  # the bucket had no position: its keys are most likely absent
        self._filling: _Filling | None = None  # what the failed tries of a first fill stored
        self._starts: tuple[int, ...] | None = None  # the kept cluster snapshots as last listed
        self._relist = True  # a save since that listing: list them again for the next position
        self._lock = asyncio.Lock()  # a save's write and a write between saves, one after the other
        self.written = 0  # entries written

    def resumed(self, state: WorkRefs) -> None:
        """The fold starts from `state` (a snapshot's, or the empty index)."""
        self._started, self._written, self._filling = state, None, None

    async def write(self, state: WorkRefs, *, relist: bool = True) -> int:
        """Write the entries changed since the last write, then the position; returns how many entries (raises BusError).

        An entry or a position another writer wrote at a later position stays (`_replaces`).
        `relist`: the snapshots were just saved, so the position's `starts` are listed again; a write
        between saves names those listed last (one it names pruned since sends readers to the listing).
        """
        async with self._lock:
            self._relist |= relist
            if state.last_seq == 0 or (self._written is not None and state.last_seq <= self._written.last_seq):
                return 0  # this writer is past it already (a save's write after a later one between saves)
            return await self._write(state)

    async def _write(self, state: WorkRefs) -> int:
        baseline = self._written if self._written is not None else await self._first_baseline()
        entries = await asyncio.to_thread(encoded_entries, state, baseline)
        known = None
        if self._fresh:  # a first fill: nothing read back, not even what an earlier try of it stored
            self._filling = _Filling() if self._filling is None else self._filling
            entries, known = await asyncio.to_thread(self._filling.still_due, state, entries)
        try:
            written = await advance_entries(self._bus, BUCKET, entries, _replaces, known=known)
            position = Position(last_seq=state.last_seq, starts=await self._kept_starts())
            await advance_entries(self._bus, BUCKET, [(POSITION_KEY, msgspec.msgpack.encode(position))], _replaces)
        except BucketMissing:
            self._written, self._filling = None, None  # the bucket is gone: the next write makes it again and writes every item
            raise
        # Any other failure (JetStream slow to answer, another writer) keeps the last state written
        # whole: the next write sends what changed since it, reading those keys' revisions only.
        # Reading every key back instead (~460k at a year) timed out again on every retry under load.
        self._written, self._fresh, self._filling = state, False, None
        self.written += written
        if baseline is None:
            log.info("workrefs: wrote every item's entry (%d, %d newer already there) at seq %d", written,
                     len(entries) - written, state.last_seq)
        return written

    async def _kept_starts(self) -> tuple[int, ...]:
        """The kept `timeline-cluster` snapshots: listed after a save, else as listed last (a listing reads the bucket)."""
        if self._relist or self._starts is None:
            name, version = timelinestart.PROJECTION.name, timelinestart.PROJECTION.version
            self._starts, self._relist = tuple(await kept_snapshots(self._bus, name, version)), False
        return self._starts

    async def _first_baseline(self) -> WorkRefs | None:
        """What the bucket already holds for this writer: its start when the entries reach it, else nothing (a full write)."""
        await ensure_entries_bucket(self._bus, BUCKET, DESCRIPTION, self._replicas)
        position = await read_position(self._bus)
        self._fresh = position is None
        if not self._fresh:
            self._filling = None  # another writer completed a fill meanwhile: its keys are read as any writer's
        if position is not None and position.last_seq >= self._started.last_seq:
            return self._started
        return None


class _Filling:
    """What the failed tries of one first fill stored: each key's revision, for entries still current.

    A first fill (a bucket with no position: its keys most likely absent) writes without reading
    a key first. A try that fails partway (~320k keys at 5.12M records of a year's log) used to
    leave its keys to be read back by the next try, and those reads, a thousand in flight, timed
    out again on every retry under load. Here the next try skips what the failed one stored that
    is still current, and writes the rest expecting the revisions it knows.
    """

    def __init__(self) -> None:
        self.stored: dict[str, int] = {}  # key -> the revision this writer stored there, its entry current as of `state`
        self.state: WorkRefs | None = None  # the state the last try wrote from

    def still_due(self, state: WorkRefs, entries: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], dict[str, int]]:
        """The entries of a fill at `state` that no earlier try stored as they still are, and the revisions to expect; CPU-bound: run it in a thread.

        An entry stored at an earlier try's state stands for `state` while the item's refs did not
        change since (`Entry`, "unchanged since"); a changed one is written again. Its revision is
        forgotten meanwhile, so that a try failing before it is stored again cannot count it as current.
        """
        if self.state is not None:
            for work_id in state.refs.changed_since(self.state.refs):
                self.stored.pop(entry_key(work_id), None)
        self.state = state
        return [(key, value) for key, value in entries if key not in self.stored], self.stored


def _replaces(key: str, ours: bytes, stored: bytes) -> bool:
    """Whether our value may replace `stored` at `key`: never with an entry or a position of an earlier one."""
    try:
        if key == POSITION_KEY:
            old, new = _position_decoder.decode(stored), _position_decoder.decode(ours)
            return old.version != new.version or old.last_seq < new.last_seq
        return workrefs.newer_entry(_entry_decoder.decode(ours), _entry_decoder.decode(stored))
    except msgspec.DecodeError:
        return True  # an unreadable value is replaced


async def read_position(bus: Bus) -> Position | None:
    """The position the entries are complete to; None without one of this version (raises BusError)."""
    data = await get_entry(bus, BUCKET, POSITION_KEY)
    try:
        position = None if data is None else _position_decoder.decode(data)
    except msgspec.DecodeError:
        log.warning("workrefs: the position in bucket %s does not decode; reading the index's snapshot", BUCKET)
        return None
    return position if position is not None and position.version == workrefs.ENTRIES_VERSION else None


async def read_entry(bus: Bus, work_id: str, position: Position) -> WorkRefs | None:
    """The index as far as it concerns `work_id` (read after `position`); None when its entry does not decode."""
    entry = await _item_entry(bus, work_id)
    return None if entry is _UNREADABLE else workrefs.from_entry(work_id, position, entry)


async def entry_beside(bus: Bus, work_id: str, positioning: Awaitable[Position | None]) -> WorkRefs | None:
    """`read_entry` with the position still being read: the entry is asked meanwhile (one round trip for both).

    None when there is no position or the entry cannot be read (read the index's snapshot).
    """
    position, entry = await asyncio.gather(positioning, _item_entry(bus, work_id))
    if position is None or entry is _UNREADABLE:
        return None
    return workrefs.from_entry(work_id, position, entry)


_UNREADABLE = Entry(as_of=-1)  # an entry that could not be read or decoded, told apart from none


async def _item_entry(bus: Bus, work_id: str) -> Entry | None:
    """The item's entry, None without one, `_UNREADABLE` when it cannot be read or decoded (raises BusUnavailable)."""
    try:
        data = await get_entry(bus, BUCKET, entry_key(work_id))
    except BusUnavailable:
        raise
    except BusError as exc:
        log.warning("workrefs: the entry of %s could not be read (%s); reading the index's snapshot", work_id, exc)
        return _UNREADABLE
    try:
        return None if data is None else _entry_decoder.decode(data)
    except msgspec.DecodeError:
        log.warning("workrefs: the entry of %s in bucket %s does not decode; reading the index's snapshot", work_id, BUCKET)
        return _UNREADABLE


async def position_or_none(bus: Bus) -> Position | None:
    """`read_position`, None also when the bucket cannot be read (the snapshots say the same, only slower)."""
    try:
        return await read_position(bus)
    except BusUnavailable:
        raise
    except BusError as exc:
        log.warning("workrefs: bucket %s could not be read (%s); reading the index's snapshot", BUCKET, exc)
        return None


async def lookup(bus: Bus, work_id: str) -> WorkRefs | None:
    """The index as far as it concerns `work_id`, from its entry; None when the bucket cannot tell (read the snapshot)."""
    position = await read_position(bus)
    return None if position is None else await read_entry(bus, work_id, position)
