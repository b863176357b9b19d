"""The client's protocol parser: the same messages as nats-py's, a large body gathered from the reads instead of copied."""

from __future__ import annotations

import os
from typing import Any

import pytest
from nats.protocol.parser import Parser

from eventbus.connection import RenewingClient
from eventbus.protocolparser import GATHER_BYTES, GatheringParser


class Recorder:
    """Stands in for the client: records every call the parser makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        assert type(data) is bytes  # handlers keep and slice it
        self.calls.append(("msg", sid, bytes(subject), bytes(reply), data, headers))

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))


def msg(subject: str, sid: int, body: bytes, reply: str = "") -> bytes:
    return f"MSG {subject} {sid} {reply + ' ' if reply else ''}{len(body)}\r\n".encode() + body + b"\r\n"


def hmsg(subject: str, sid: int, headers: bytes, body: bytes) -> bytes:
    return f"HMSG {subject} {sid} {len(headers)} {len(headers) + len(body)}\r\n".encode() + headers + body + b"\r\n"


async def parsed(parser_class: type[Parser], stream: bytes, cut: int) -> list[tuple[Any, ...]]:
    recorder = Recorder()
    parser = parser_class(recorder)
    for start in range(0, len(stream), cut):
        await parser.parse(stream[start : start + cut])
    return recorder.calls


# Bodies on both sides of the gathering threshold, empty ones, headers, pings between messages.
SMALL = b"".join([
    msg("$O.b.C.x", 1, os.urandom(GATHER_BYTES + 5), "$JS.ACK.OBJ_b.c.1.1.1.1.0"), b"PING\r\n",
    msg("a", 2, os.urandom(GATHER_BYTES)), msg("b", 3, b""), msg("c", 1, b"abc"), msg("d", 4, os.urandom(GATHER_BYTES - 1)),
    hmsg("e", 5, b"NATS/1.0\r\nA: b\r\n\r\n", os.urandom(GATHER_BYTES + 1)), b"PONG\r\n",
])
LARGE = b"".join(msg("$O.b.C.x", i % 3, os.urandom(size), f"$JS.ACK.OBJ_b.c.1.1.1.{i}.0")
                 for i, size in enumerate([1 << 20, 5, 3 << 20, 0, 200_000, 1 << 20, GATHER_BYTES, 70_001]))


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 4096])
async def test_small_reads_give_the_same_messages_as_nats_pys_parser(cut: int) -> None:
    assert await parsed(GatheringParser, SMALL, cut) == await parsed(Parser, SMALL, 4096)


@pytest.mark.parametrize("cut", [65_535, 262_144, 1 << 20, 3 << 20, len(LARGE)])
async def test_large_reads_give_the_same_messages_as_nats_pys_parser(cut: int) -> None:
    assert await parsed(GatheringParser, LARGE, cut) == await parsed(Parser, LARGE, cut)


async def test_a_large_body_waits_in_the_reads_not_in_the_parsers_buffer() -> None:
    # nats-py's parser holds it in its bytearray, then copies it out twice.
    stream = msg("$O.b.C.x", 1, os.urandom(1 << 20))
    recorder = Recorder()
    parser = GatheringParser(recorder)
    for start in range(0, 3 << 18, 1 << 18):
        await parser.parse(stream[start : start + (1 << 18)])
    assert len(parser.buf) == 0 and not recorder.calls
    await parser.parse(stream[3 << 18 :])
    assert [call[4] for call in recorder.calls] == [stream[stream.index(b"\r\n") + 2 : -2]]


async def test_a_reset_drops_a_body_being_gathered() -> None:
    # nats-py resets its parser on a reconnect: the new connection starts with a control line.
    recorder = Recorder()
    parser = GatheringParser(recorder)
    await parser.parse(msg("x", 1, os.urandom(GATHER_BYTES * 2))[:GATHER_BYTES])
    parser.reset()
    await parser.parse(msg("y", 2, b"ok"))
    assert recorder.calls == [("msg", 2, b"y", b"", b"ok", None)]


def test_every_connection_of_the_bus_parses_with_it() -> None:
    assert isinstance(RenewingClient(None, 1.0)._ps, GatheringParser)
