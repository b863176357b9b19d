"""A snapshot object hashed and inflated chunk by chunk as it arrives, on its own thread: the same bytes as a whole inflate."""

from __future__ import annotations

import hashlib
import io
import random
import zlib

import pytest

from eventbus.objects import put_stream
from eventbus.snapshotinflate import DEFLATED, ZSTD, SnapshotInflater, fetch_inflated
from eventbus.snapshots import SNAPSHOT_BUCKET, load_snapshot, packed, save_snapshot, unpacked
from tests.bus_harness import provisioned_bus


def _snapshot(size: int) -> bytes:
    rng = random.Random(size)
    words = [rng.randbytes(6).hex().encode() for _ in range(500)]
    return b"\x82" + b"".join(rng.choice(words) for _ in range(size // 12))  # compressible, as a fold's msgpack


async def _through(stored: bytes, cut: int) -> tuple[int, str, bytes | None, str]:
    inflater = SnapshotInflater(len(stored))
    try:
        for start in range(0, len(stored), cut):
            assert await inflater.write(stored[start:start + cut]) is None
        return tuple(await inflater.finish())  # type: ignore[return-value]
    finally:
        await inflater.close()


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 4096, 1 << 20])
async def test_chunks_cut_anywhere_inflate_to_the_snapshot_with_the_whole_objects_digest(cut: int) -> None:
    raw = _snapshot(30_000 if cut < 4096 else 3_000_000)  # a thread hop per cut: small where cuts are
    stored = packed(raw)
    assert await _through(stored, cut) == (len(stored), hashlib.sha256(stored).hexdigest(), raw, "")


@pytest.mark.parametrize("cut", [1, 3, 1 << 20])
async def test_a_snapshot_saved_before_deflation_and_one_shorter_than_the_marker_are_kept_as_they_are(cut: int) -> None:
    raw = _snapshot(10_000)
    assert (await _through(raw, cut))[2] == raw
    assert (await _through(b"\x80", cut))[2] == b"\x80"


async def test_a_stream_that_does_not_inflate_or_is_cut_short_gives_no_snapshot_and_says_why() -> None:
    stored = packed(_snapshot(300_000))
    for garbage in (ZSTD + b"not a zstd frame" * 10, DEFLATED + b"not a deflate stream" * 10):
        _size, _sha256, snapshot, error = await _through(garbage, 4096)
        assert snapshot is None and "does not inflate" in error
    assert (await _through(stored[:-50], 4096))[2:] == (None, "its compressed stream is cut short")
    with pytest.raises(ValueError, match="cut short"):
        unpacked(stored[:-50])


@pytest.mark.parametrize("cut", [3, 4096])
async def test_a_snapshot_stored_deflated_before_zstd_still_reads_by_its_tag(cut: int) -> None:
    raw = _snapshot(300_000)
    deflated = DEFLATED + zlib.compress(raw, 3)
    assert (await _through(deflated, cut))[2] == raw
    assert unpacked(deflated) == raw
    assert packed(raw).startswith(ZSTD) and len(packed(raw)) < len(deflated)


async def test_chunks_are_inflated_as_they_arrive_not_after_the_last() -> None:
    raw = _snapshot(4_000_000)
    stored = packed(raw)
    inflater = SnapshotInflater(len(stored))
    try:
        await inflater.write(stored[: len(stored) // 2])
        while inflater._queue:  # the first half taken by the thread; the rest not yet arrived
            await inflater._queue.pop(0)
        assert sum(len(p) for p in inflater._pieces) > len(raw) // 4
        await inflater.write(stored[len(stored) // 2:])
        assert (await inflater.finish()).snapshot == raw
    finally:
        await inflater.close()


async def test_more_bytes_than_the_objects_size_are_counted_and_fail_its_digest() -> None:
    stored = packed(_snapshot(100_000))
    inflater = SnapshotInflater(len(stored) - 10)
    try:
        await inflater.write(stored)
        inflated = await inflater.finish()
    finally:
        await inflater.close()
    assert (inflated.size, inflated.sha256) == (len(stored), "")


async def test_a_bundle_sized_snapshot_loads_from_a_server_through_the_streaming_inflate(nats_url: str) -> None:
    raw = _snapshot(6_000_000)
    async with provisioned_bus(nats_url) as bus:
        await save_snapshot(bus, "several-chunks", raw)
        inflated = await fetch_inflated(bus, SNAPSHOT_BUCKET, "several-chunks", idle_timeout_s=10)
        assert inflated is not None and inflated.snapshot == raw
        await put_stream(bus, SNAPSHOT_BUCKET, "cut-short", io.BytesIO(packed(raw)[:-100]), what="cut")
        assert await load_snapshot(bus, "cut-short") is None  # its digest matches, its stream does not end: an older one is tried
        assert await fetch_inflated(bus, SNAPSHOT_BUCKET, "missing", idle_timeout_s=10) is None
        await put_stream(bus, SNAPSHOT_BUCKET, "deflated", io.BytesIO(DEFLATED + zlib.compress(raw, 3)), what="old")
        assert await load_snapshot(bus, "deflated") == raw
