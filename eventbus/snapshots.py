"""Projection snapshots kept in JetStream, one object per projection name, in the `rr_snapshots` bucket.

An object store rather than a KV bucket: a KV value is one message, bounded by the server's
max payload (1 MiB by default), and the snapshot of a long log's work items is larger; the
object store chunks it. A snapshot is only a cache of a fold: losing it costs a rebuild.

Stored compressed (zstd, behind a tag: eventbus/snapshotinflate.py): a fold's msgpack shrinks
~15x (the API's bundle at 1M records, 21.9 MB to 1.5 MB), so it is read that much faster and the
bucket holds that much less; one saved deflated or uncompressed before is read by its tag.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import NamedTuple

import nats.errors
import nats.js.errors
import zstandard

from eventbus.connection import Bus
from eventbus.errors import BusError, BusUnavailable
from eventbus.objectdelete import delete_chunks
from eventbus.objects import (
    BucketSpec,
    ObjectCorrupt,
    ObjectReplaced,
    ensure_bucket,
    list_objects,
    put_stream,
    stat_object,
)
from eventbus.snapshotinflate import TAG_BYTES, ZSTD, ZSTD_LEVEL, decompressor, fetch_inflated

SNAPSHOT_BUCKET = "rr_snapshots"
DESCRIPTION = "rr projection snapshots (a cache: deleting it costs a rebuild)"
log = logging.getLogger(__name__)

TIMEOUT_S = 30.0  # a snapshot is a few MiB at most; far more than that means JetStream is not answering



def packed(data: bytes) -> bytes:
    """`data` as stored: compressed, behind its codec's tag (CPU-bound: run it in a thread)."""
    return ZSTD + zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


def unpacked(stored: bytes) -> bytes:
    """The snapshot `stored` holds, by its tag (as it is without one); raises snapshotinflate.CODEC_ERRORS, or ValueError when cut short."""
    codec = decompressor(stored[:TAG_BYTES])
    if codec is None:
        return stored
    data = codec.decompress(stored[TAG_BYTES:])
    if not codec.eof:
        raise ValueError("the compressed snapshot is cut short")
    return data


_SILENT = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError, asyncio.TimeoutError)


async def save_snapshot(bus: Bus, name: str, data: bytes, *, bucket: str = SNAPSHOT_BUCKET, replicas: int = 1) -> None:
    """Store `data` as the snapshot `name`, replacing the previous one; creates the bucket if needed.

    Without purges (the leader's credentials may not purge, eventbus/objectdelete.py): the new
    version goes in first, then the previous version's chunks are deleted one by one.
    """
    try:
        await ensure_bucket(bus, BucketSpec(name=bucket, description=DESCRIPTION, replicas=replicas))
        previous = await stat_object(bus, bucket, name)
        stored = await asyncio.to_thread(packed, data)
        await put_stream(bus, bucket, name, io.BytesIO(stored), what=f"snapshot {name}", timeout_s=TIMEOUT_S)
        if previous is not None:
            await asyncio.wait_for(delete_chunks(bus, bucket, previous.nuid), TIMEOUT_S)
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer saving snapshot {name}: {exc or type(exc).__name__}") from None
    except nats.js.errors.APIError as exc:
        raise BusError(f"snapshot {name} not saved: {exc.description} (err_code {exc.err_code})") from None


async def load_snapshot(bus: Bus, name: str, *, bucket: str = SNAPSHOT_BUCKET) -> bytes | None:
    """The stored snapshot `name`, or None when there is none (or it was pruned or is corrupt: the caller tries another)."""
    try:
        inflated = await fetch_inflated(bus, bucket, name, idle_timeout_s=TIMEOUT_S)
    except (ObjectReplaced, ObjectCorrupt) as exc:
        log.warning("snapshot %s not read: %s", name, exc)
        return None
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer loading snapshot {name}: {exc or type(exc).__name__}") from None
    if inflated is None:
        return None
    if inflated.snapshot is None:
        log.warning("snapshot %s not read: %s", name, inflated.error)
    return inflated.snapshot


# Several snapshots per projection: one object per (name, version, seq), so a version bump
# leaves the old ones unlisted (and later pruned) without reading them, and a point in time
# resumes from the newest one at or before it.
_KEPT_SEP = "@v"


def kept_name(name: str, version: int, seq: int) -> str:
    """The object name of the snapshot of `name` version `version` at stream sequence `seq`."""
    return f"{name}{_KEPT_SEP}{version}.{seq:012d}"


def parse_kept_name(object_name: str) -> tuple[str, int, int] | None:
    """(name, version, seq) of a kept full snapshot's object name; None for any other object (a delta's included)."""
    name, sep, rest = object_name.rpartition(_KEPT_SEP)
    version, dot, seq = rest.partition(".")
    if not (sep and dot and version.isdigit() and seq.isdigit()):
        return None
    return name, int(version), int(seq)


# A delta snapshot (projections/snapshotdelta.py) is named after its position and the one it
# applies to, so the bucket's listing alone says which chains are whole. Readers that know only
# full snapshots do not parse these names (the sequence part is not all digits) and skip them.
_DELTA_SEP = ".d"


def delta_name(name: str, version: int, seq: int, prev: int) -> str:
    """The object name of the delta snapshot of `name` version `version` at `seq`, applying to the one at `prev`."""
    return f"{kept_name(name, version, seq)}{_DELTA_SEP}{prev:012d}"


def parse_delta_name(object_name: str) -> tuple[str, int, int, int] | None:
    """(name, version, seq, prev) of a delta snapshot's object name; None for any other object."""
    head, sep, prev = object_name.rpartition(_DELTA_SEP)
    parsed = parse_kept_name(head) if sep and prev.isdigit() else None
    return None if parsed is None else (*parsed, int(prev))


def parse_point(object_name: str) -> tuple[str, int, int, int] | None:
    """(name, version, seq, prev) of a kept snapshot, full (prev 0) or delta; None for any other object."""
    full = parse_kept_name(object_name)
    return (*full, 0) if full is not None else parse_delta_name(object_name)


class KeptIndex(dict[tuple[str, int], list[int]]):
    """The kept points' sequences by (name, version), oldest first, and `links`: each delta's position -> the one it applies to.

    A plain dict of sequences serves where only full snapshots are listed (no links: every one a base).
    """

    def __init__(self) -> None:
        super().__init__()
        self.links: dict[tuple[str, int], dict[int, int]] = {}

    def points(self, key: tuple[str, int]) -> dict[int, int]:
        """The points of `key` as projections/snapshotchains.py takes them: seq -> the seq its delta applies to (0: a base)."""
        links = self.links.get(key, {})
        return {seq: links.get(seq, 0) for seq in self.get(key, [])}


async def kept_snapshots(bus: Bus, name: str, version: int, *, bucket: str = SNAPSHOT_BUCKET) -> list[int]:
    """The stream sequences of the kept full snapshots of `name` at `version`, oldest first (deltas need their chain: `kept_index`)."""
    seqs = []
    for obj in await list_objects(bus, bucket):
        parsed = parse_kept_name(obj.name)
        if parsed is not None and parsed[:2] == (name, version):
            seqs.append(parsed[2])
    return sorted(seqs)


async def kept_index(bus: Bus, *, bucket: str = SNAPSHOT_BUCKET) -> KeptIndex:
    """The kept points' sequences by (name, version), oldest first, with the deltas' links, from one listing of the bucket.

    Where a full snapshot and a delta stand at one position, the full one is listed (no link to follow).
    """
    found: dict[tuple[str, int], dict[int, int]] = {}
    for obj in await list_objects(bus, bucket):
        parsed = parse_point(obj.name)
        if parsed is not None:
            name, version, seq, prev = parsed
            seqs = found.setdefault((name, version), {})
            seqs[seq] = min(seqs.get(seq, prev), prev)
    index = KeptIndex()
    for key, seqs in found.items():
        index[key] = sorted(seqs)
        index.links[key] = {seq: prev for seq, prev in seqs.items() if prev}
    return index


async def kept_objects(bus: Bus, name: str, *, bucket: str = SNAPSHOT_BUCKET) -> list[tuple[int, int, str]]:
    """(version, seq, object name) of every kept snapshot of `name`, whatever its version."""
    found = []
    for obj in await list_objects(bus, bucket):
        parsed = parse_kept_name(obj.name)
        if parsed is not None and parsed[0] == name:
            found.append((parsed[1], parsed[2], obj.name))
    return sorted(found)


class KeptObject(NamedTuple):
    """A kept snapshot as the bucket lists it: what it is of, and its stored (deflated) size."""

    name: str
    version: int
    seq: int
    object_name: str
    size: int
    prev: int = 0  # a delta's: the position of the snapshot it applies to; 0 for a full snapshot


async def kept_listing(bus: Bus, *, bucket: str = SNAPSHOT_BUCKET) -> tuple[list[KeptObject], int]:
    """Every kept snapshot (full and delta) in the bucket, oldest first per name, and the bytes of all its objects (kept or not)."""
    objects = await list_objects(bus, bucket)
    found = []
    for obj in objects:
        parsed = parse_point(obj.name)
        if parsed is not None:
            found.append(KeptObject(parsed[0], parsed[1], parsed[2], obj.name, obj.size, parsed[3]))
    return sorted(found), sum(obj.size for obj in objects)


async def save_kept(bus: Bus, name: str, version: int, seq: int, data: bytes, *, replicas: int = 1,
                    bucket: str = SNAPSHOT_BUCKET, prev: int = 0) -> str:
    """Store `data` as the snapshot of `name` at `seq` beside the others kept (a delta against `prev` when set); returns its object name."""
    object_name = kept_name(name, version, seq) if not prev else delta_name(name, version, seq, prev)
    await save_snapshot(bus, object_name, data, bucket=bucket, replicas=replicas)
    return object_name
