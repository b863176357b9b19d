"""Fetch, then place: a fetched file appears under its final name whole and verified, or not at all."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from eventbus.connection import Bus
from eventbus.objects import BucketSpec, ObjectCorrupt, ObjectMissing, ensure_bucket, put_file
from servicekit import fileplace

BUCKET = "rr_place_test"
CONTENT = b"a model's weights " * 100_000  # ~1.7 MiB: more than one chunk
SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
async def stored(bus: Bus, tmp_path: Path) -> Bus:
    await ensure_bucket(bus, BucketSpec(name=BUCKET))
    source = tmp_path / "source.bin"
    source.write_bytes(CONTENT)
    await put_file(bus, BUCKET, "m1", source)
    return bus


async def test_a_verified_object_is_placed_under_its_final_name_and_the_partial_file_is_gone(stored: Bus, tmp_path: Path) -> None:
    temp = fileplace.incoming(tmp_path / ".incoming", "m1.part")
    final = tmp_path / "versions" / "m1.pth"
    fetched = await fileplace.fetch_and_place(stored, BUCKET, "m1", temp, final, expect_sha256=SHA, expect_size=len(CONTENT))
    assert final.read_bytes() == CONTENT and fetched.object.size == len(CONTENT)
    assert not temp.exists()


@pytest.mark.parametrize(("name", "sha", "error"), [("m1", "0" * 64, ObjectCorrupt), ("absent", SHA, ObjectMissing)])
async def test_a_failed_fetch_leaves_neither_the_partial_file_nor_a_final_one(
        stored: Bus, tmp_path: Path, name: str, sha: str, error: type[Exception]) -> None:
    temp = fileplace.incoming(tmp_path / ".incoming", "m1.part")
    final = tmp_path / "versions" / "m1.pth"
    with pytest.raises(error):
        await fileplace.fetch_and_place(stored, BUCKET, name, temp, final, expect_sha256=sha)
    assert not temp.exists() and not final.exists()


async def test_a_cancelled_fetch_removes_its_partial_file(stored: Bus, tmp_path: Path) -> None:
    temp = tmp_path / "m1.part"
    temp.write_bytes(b"left by the fetch")  # as if the download had begun
    task = asyncio.create_task(fileplace.fetch_and_place(stored, BUCKET, "m1", temp, tmp_path / "m1.pth", expect_sha256=SHA))
    await asyncio.sleep(0)  # let it start, then cancel it mid-way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not temp.exists() and not (tmp_path / "m1.pth").exists()


def test_incoming_clears_a_stale_partial_file_and_place_replaces_atomically(tmp_path: Path) -> None:
    stale = tmp_path / ".incoming" / "x.part"
    stale.parent.mkdir()
    stale.write_bytes(b"from a crash")
    temp = fileplace.incoming(tmp_path / ".incoming", "x.part")
    assert temp == stale and not temp.exists()
    temp.write_bytes(b"new")
    final = tmp_path / "deep" / "x.bin"
    fileplace.place(temp, final)
    assert final.read_bytes() == b"new" and not temp.exists()
    assert fileplace.free_bytes(tmp_path / "not" / "made" / "yet") > 0
