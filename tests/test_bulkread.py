"""Large messages read with one copy: nats-py's parser keeps parsing the same, downloads and other messages on the connection alike."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats.protocol.parser
from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus.bulkread import PayloadBuffer, keep_freed_memory, read_payloads_with_one_copy
from eventbus.connection import Bus
from eventbus.objects import BucketSpec, ensure_bucket, fetch_to_file, put_file

ROOT = Path(__file__).resolve().parent.parent


class _Received:
    """The client side nats-py's parser calls: what it delivered."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, int, bytes, bytes, bytes | None]] = []

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, payload: bytes, hdr: bytes | None) -> None:
        self.messages.append((subject, sid, reply, payload, hdr))

    async def _process_ping(self) -> None:
        pass

    async def _process_pong(self) -> None:
        pass


def _frames(payloads: list[bytes]) -> bytes:
    out = bytearray()
    for i, payload in enumerate(payloads):
        if i % 2:
            out += b"MSG rr.evt.x %d _INBOX.r %d\r\n" % (i, len(payload)) + payload + b"\r\nPING\r\n"
        else:
            header = b"NATS/1.0\r\nNats-Msg-Id: m%d\r\n\r\n" % i
            out += b"HMSG $O.b.C.n %d $JS.ACK.OBJ_b.c.1.%d.%d.1.0 %d %d\r\n" % (i, i + 1, i + 1, len(header), len(header) + len(payload))
            out += header + payload + b"\r\n"
    return bytes(out)


async def _parse(data: bytes, cuts: list[int], buffer: bytearray) -> list[tuple[bytes, int, bytes, bytes, bytes | None]]:
    received = _Received()
    parser: Any = nats.protocol.parser.Parser(received)
    parser.buf = buffer
    edges = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, end in zip(edges, edges[1:], strict=False):
        await parser.parse(data[start:end])
    assert not parser.buf  # everything was taken out of the buffer: no export left blocking a delete
    return received.messages


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=8), st.lists(st.integers(min_value=0), max_size=12))
def test_the_parser_delivers_the_same_messages_with_a_payload_buffer_wherever_the_reads_split(
    payloads: list[bytes], cuts: list[int]
) -> None:
    data = _frames(payloads)
    plain = asyncio.run(_parse(data, cuts, bytearray()))
    ours = asyncio.run(_parse(data, cuts, PayloadBuffer()))
    assert ours == plain
    assert [m[3] for m in ours] == payloads
    assert all(type(m[3]) is bytes for m in ours)


def test_a_payload_buffer_slice_is_bytes_and_the_buffer_stays_editable() -> None:
    buffer = PayloadBuffer(b"0123456789")
    part: object = buffer[2:5]
    assert part == b"234" and type(part) is bytes
    assert buffer[3] == ord("3") and buffer[::3] == b"0369"
    del buffer[:4]  # the slice's views are released: a live one would raise BufferError here
    buffer.extend(b"ab")
    assert bytes(buffer) == b"456789ab"


def test_a_client_whose_parser_has_no_bytearray_buffer_is_left_as_it_is() -> None:
    class Other:
        buf = [b"not", b"nats-py's"]

    class Client:
        _ps = Other()

    assert not read_payloads_with_one_copy(Client())  # type: ignore[arg-type]
    assert Client._ps.buf == [b"not", b"nats-py's"]
    assert not read_payloads_with_one_copy(object())  # type: ignore[arg-type]


def _faults_parsing_chunks(tuned: bool) -> int:
    # A fresh process each, so one allocator's history does not hide the other's.
    code = f"""
import asyncio, os, resource
import nats.protocol.parser
from eventbus.bulkread import keep_freed_memory
if {tuned}:
    keep_freed_memory()
class Nc:
    async def _process_msg(self, *args): pass
chunk = os.urandom(1 << 20)
frame = b"MSG $O.b.C.n 1 %d\\r\\n" % len(chunk) + chunk + b"\\r\\n"
data = frame * 24
async def main():
    parser = nats.protocol.parser.Parser(Nc())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(0, len(data), 1 << 20):
        await parser.parse(data[i:i + (1 << 20)])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return int(out.stdout.strip())


def test_parsing_chunks_reuses_freed_memory_instead_of_faulting_in_fresh_pages() -> None:
    assert keep_freed_memory()  # glibc here, as on every node
    plain, tuned = _faults_parsing_chunks(False), _faults_parsing_chunks(True)
    # 24 MiB of chunks: glibc's own thresholds fault in about the whole of every chunk's copies again
    # (~6k pages), kept memory only the first ones
    assert tuned * 4 < plain, (tuned, plain)


async def test_a_download_leaves_the_connection_parsing_other_messages_as_before(bus: Bus, tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)
    (tmp_path / "model").write_bytes(data)
    await ensure_bucket(bus, BucketSpec(name="rr_models"))
    await put_file(bus, "rr_models", "m1", tmp_path / "model")
    fetched = await fetch_to_file(bus, "rr_models", "m1", tmp_path / "copy", expect_sha256=hashlib.sha256(data).hexdigest())
    assert fetched.object.size == len(data) and (tmp_path / "copy").read_bytes() == data
    assert isinstance(bus.nc._ps.buf, PayloadBuffer)
    # the same connection goes on: headers and payloads of ordinary messages arrive intact
    sub = await bus.nc.subscribe("rr.test.after")
    await bus.nc.publish("rr.test.after", b"payload", headers={"Nats-Msg-Id": "one"})
    await bus.nc.publish("rr.test.after", b"")
    first, second = await sub.next_msg(timeout=5), await sub.next_msg(timeout=5)
    assert (first.data, first.headers, second.data) == (b"payload", {"Nats-Msg-Id": "one"}, b"")
    assert type(first.data) is bytes
