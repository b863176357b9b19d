"""A snapshot object inflated while its chunks arrive, on a thread of its own, its digest checked on the way.

Before, a snapshot's load read every chunk, joined them, hashed the whole, then inflated it in
another thread: the inflate (the larger part of a bundle's fetch: ops/bench/README.md, "The API's
bundle fetched") began only after the last chunk. Here each chunk goes to one thread as it arrives,
which hashes it and feeds it to a streaming decompressor, so the inflate runs while the server sends
the rest and the compressed bytes are never joined or copied. The digest is still checked over every
byte before anything inflated is returned.

The codec is read from the object's first four bytes: ZSTD (what `eventbus.snapshots.packed` writes:
zstd's window spans the bucket maps' neighbouring ids, deflate's 32 KiB does not, so a bundle stores in
half the bytes, and inflates in half the CPU), DEFLATED (stored before, read as it was), or neither: a
msgpack snapshot stored before either, kept as it is (a msgpack map starts with 0x8_ or 0xde/0xdf).
"""

from __future__ import annotations

import hashlib
import zlib
from typing import NamedTuple, Protocol

import zstandard

from eventbus.chunkthread import ChunkThread
from eventbus.connection import Bus
from eventbus.objects import check_digest, fetch_chunks, stat_direct

DEFLATED = b"rrz1"  # zlib's deflate, as snapshots were stored before ZSTD
ZSTD = b"rrzs"  # one zstd frame
TAG_BYTES = 4
ZSTD_LEVEL = 3  # the API's bundle at 1M records: 0.16 s of CPU, 1.50 MB (deflate's level 3: 0.25 s, 3.18 MB)


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, /) -> bytes: ...


def decompressor(tag: bytes) -> _Decompressor | None:
    """A streaming decompressor for a stored snapshot that starts with `tag`; None: not compressed (stored as it is)."""
    if tag == ZSTD:
        return zstandard.ZstdDecompressor().decompressobj()
    if tag == DEFLATED:
        return zlib.decompressobj()
    return None


CODEC_ERRORS = (zlib.error, zstandard.ZstdError)


class Inflated(NamedTuple):
    """What a snapshot object's chunks held: their bytes and sha256, and the snapshot (None: it did not inflate)."""

    size: int
    sha256: str
    snapshot: bytes | None
    error: str  # why `snapshot` is None


class SnapshotInflater(ChunkThread[Inflated]):
    """Hashes and inflates a snapshot object's chunks in order on one thread; one saved before, undeflated, is kept as it is."""

    def __init__(self, limit: int) -> None:
        super().__init__("rr-inflate")
        self._limit = limit  # more bytes than the object's size: corrupt, counted and no longer kept
        self._size = 0
        self._hash = hashlib.sha256()
        self._head = b""  # the first bytes, until the marker can be told apart
        self._decided = False  # whether the marker was looked for
        self._inflater: _Decompressor | None = None
        self._pieces: list[bytes] = []
        self._error = ""

    def _take(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            return
        self._hash.update(data)
        if not self._decided:  # the marker may in theory straddle chunks: gather the first bytes
            self._head += data
            if len(self._head) < TAG_BYTES:
                return
            data, self._head, self._decided = self._head, b"", True
            self._inflater = decompressor(data[:TAG_BYTES])
            if self._inflater is not None:
                data = data[TAG_BYTES:]
        self._add(data)

    def _add(self, data: bytes) -> None:
        if self._error:
            return
        if self._inflater is None:
            self._pieces.append(data)
            return
        try:
            self._pieces.append(self._inflater.decompress(data))
        except CODEC_ERRORS as exc:
            self._error, self._pieces = f"it does not inflate ({exc})", []

    def _end(self) -> Inflated:
        sha256 = self._hash.hexdigest() if self._size <= self._limit else ""
        if not self._decided:
            self._pieces = [self._head]  # shorter than the marker: as it is
        elif self._inflater is not None and not self._error and not self._inflater.eof:
            self._error = "its compressed stream is cut short"
        snapshot = None if self._error else b"".join(self._pieces)
        self._pieces = []
        return Inflated(self._size, sha256, snapshot, self._error)


async def fetch_inflated(bus: Bus, bucket: str, name: str, *, idle_timeout_s: float) -> Inflated | None:
    """The snapshot object `name`, read, verified and inflated; None when there is none.

    Raises as `eventbus.objects.fetch_bytes` does (ObjectCorrupt when its digest does not match).
    """
    stored = await stat_direct(bus, bucket, name)
    if stored is None:
        return None
    inflater = SnapshotInflater(stored.size)
    try:
        await fetch_chunks(bus, stored, inflater, idle_timeout_s)
        inflated = await inflater.finish()
    finally:
        await inflater.close()
    check_digest(stored, inflated.size, inflated.sha256)
    return inflated
