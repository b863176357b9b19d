"""A download's writer: chunks written and hashed in order, handed to the disk while the download goes on."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
from pathlib import Path

import nats.aio.client
import pytest

from eventbus import downloadfile
from eventbus.connection import READ_BUFFER_BYTES
from eventbus.downloadfile import ALIGN, STAGE_BYTES, WRITEBACK_BYTES
from eventbus.objects import CHUNK_BYTES
from eventbus.objectwriter import ChunkWriter


def direct_io_allowed(folder: Path) -> bool:
    """Whether the filesystem of `folder` opens files for direct I/O (ext4 and xfs do, tmpfs since Linux 6.6)."""
    try:
        os.close(os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600))
    except OSError:
        return False
    return True


async def written(dest: Path, chunks: list[bytes]) -> tuple[tuple[int, str], bool]:
    """`chunks` through a ChunkWriter into `dest`: (its size and sha256, whether it wrote around the page cache)."""
    writer = ChunkWriter(dest, limit=sum(map(len, chunks)))
    try:
        for chunk in chunks:
            assert await writer.write(chunk) is None
        result = await writer.finish()
        direct = writer._file is not None and writer._file.direct
    finally:
        await writer.close()
    return result, direct


def refusing_direct_io(monkeypatch: pytest.MonkeyPatch, *, at: str) -> None:
    """Make the filesystem refuse O_DIRECT (EINVAL) when a file is opened (`at="open"`) or first written (`at="write"`)."""
    real_open, real_write = os.open, os.write

    def fake_open(path: Path, flags: int, mode: int = 0o777) -> int:
        if at == "open" and flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "direct I/O refused")
        return real_open(path, flags, mode)

    def fake_write(fd: int, data: memoryview) -> int:
        if at == "write" and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "direct I/O refused")
        return real_write(fd, data)

    monkeypatch.setattr(downloadfile.os, "open", fake_open)
    monkeypatch.setattr(downloadfile.os, "write", fake_write)


# Sizes around the block and the staging buffer, cut into chunks that do not line up with either.
EDGES = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, STAGE_BYTES - 1, STAGE_BYTES, 2 * STAGE_BYTES + ALIGN + 3]


@pytest.mark.parametrize("size", EDGES)
async def test_a_download_holds_exactly_the_bytes_received_whatever_their_alignment(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    chunks = [data[i : i + 300_001] for i in range(0, size, 300_001)]
    assert await written(tmp_path / "model.part", chunks) == ((size, hashlib.sha256(data).hexdigest()),
                                                               direct_io_allowed(tmp_path))
    assert (tmp_path / "model.part").read_bytes() == data


async def test_a_download_writes_around_the_page_cache_where_the_filesystem_allows_it(tmp_path: Path) -> None:
    # A buffered write's copy into the page cache (and its writeback) was ~20% of a download's CPU here.
    chunks = [bytes([i]) * CHUNK_BYTES for i in range(5)]
    _, direct = await written(tmp_path / "model.part", chunks)
    assert direct == direct_io_allowed(tmp_path)


@pytest.mark.parametrize("at", ["open", "write"])
async def test_a_filesystem_without_direct_io_gets_buffered_writes_and_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: str
) -> None:
    refusing_direct_io(monkeypatch, at=at)
    data = os.urandom(STAGE_BYTES + ALIGN + 7)
    result, direct = await written(tmp_path / "model.part", [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)])
    assert (result, direct) == ((len(data), hashlib.sha256(data).hexdigest()), False)
    assert (tmp_path / "model.part").read_bytes() == data


async def test_a_buffered_download_asks_the_disk_to_write_as_it_goes_not_only_at_the_final_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing_direct_io(monkeypatch, at="open")
    chunks = [bytes([i]) * CHUNK_BYTES for i in range(2 * WRITEBACK_BYTES // CHUNK_BYTES + 3)]
    writer = ChunkWriter(tmp_path / "model.part", limit=len(chunks) * CHUNK_BYTES)
    try:
        for chunk in chunks:
            assert await writer.write(chunk) is None
        while writer._queue:  # every chunk written, the final fsync not yet asked for
            await writer._queue.pop(0)
        assert writer._file is not None and writer._file.written_back >= 2 * WRITEBACK_BYTES
        size, sha256 = await writer.finish()
    finally:
        await writer.close()
    data = b"".join(chunks)
    assert (size, sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "model.part").read_bytes() == data


def test_a_connection_reads_an_object_chunk_in_one_go() -> None:
    # nats-py's default, 32 KiB, split every 1 MiB chunk into ~32 reads and reader pauses.
    assert nats.aio.client.DEFAULT_BUFFER_SIZE >= READ_BUFFER_BYTES >= CHUNK_BYTES


def test_every_server_config_carries_a_whole_object_chunk_in_one_message() -> None:
    # Uploads cut objects into min(CHUNK_BYTES, max_payload) chunks; a smaller max_payload means more, smaller
    # messages, which cost downloads more CPU per MB, and a larger one was measured slower (ops/nats/*.conf).
    configs = sorted((Path(__file__).resolve().parent.parent / "ops" / "nats").glob("*.conf"))
    assert configs
    for config in configs:
        found = re.findall(r"^max_payload:\s*(\d+)\s*$", config.read_text(), flags=re.MULTILINE)
        assert found == [str(CHUNK_BYTES)], f"{config.name}: max_payload {found}, expected {CHUNK_BYTES}"
