"""A download's writer: chunks written and hashed in order, handed to the disk while the download goes on."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import nats.aio.client

from eventbus.connection import READ_BUFFER_BYTES
from eventbus.objects import CHUNK_BYTES
from eventbus.objectwriter import WRITEBACK_BYTES, ChunkWriter


async def test_a_download_asks_the_disk_to_write_as_it_goes_not_only_at_the_final_fsync(tmp_path: Path) -> None:
    chunks = [bytes([i]) * CHUNK_BYTES for i in range(2 * WRITEBACK_BYTES // CHUNK_BYTES + 3)]
    writer = ChunkWriter(tmp_path / "model.part", limit=len(chunks) * CHUNK_BYTES)
    try:
        for chunk in chunks:
            assert await writer.write(chunk) is None
        while writer._queue:  # every chunk written, the final fsync not yet asked for
            await writer._queue.pop(0)
        assert writer._written_back >= 2 * WRITEBACK_BYTES
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
