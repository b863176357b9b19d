"""The bus's header parser: nats-py's rule exactly, wired into the client every service connects with."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client

from eventbus import headerlines
from eventbus.connection import Bus, RenewingClient

# Bytes that make header lines interesting: separators, every kind of whitespace str.isspace() knows
# (including the ASCII separators \x1c-\x1f that bytes.strip() keeps), non-ASCII and broken UTF-8.
_PIECES = st.sampled_from([
    b"Nats-Msg-Id", b"traceparent", b"Status", b":", b": ", b"\r\n", b" ", b"\t", b"\x0b", b"\x0c", b"\x1c",
    b"\x1f", b"\x85", b"\xc3\xa9", b"\xff", b"a", b"-", b"node-1:0123abcd", b"\r", b"\n",
])


@given(st.lists(_PIECES, max_size=24).map(b"".join))
def test_parses_every_block_as_nats_py_does(raw: bytes) -> None:
    assert headerlines.parse(raw) == Client._parse_header_lines(raw)


def test_an_event_block() -> None:
    raw = b"Nats-Msg-Id: leader:00ff\r\ntraceparent:00-ab-cd-01\r\nBad Name: x\r\n\xffKey: y\r\nno colon\r\n\r\n"
    assert headerlines.parse(raw) == {"Nats-Msg-Id": "leader:00ff", "traceparent": "00-ab-cd-01"}


def test_whitespace_inside_a_name_drops_the_line_and_an_empty_name_is_kept() -> None:
    assert headerlines.parse(b"A\x1cB: 1\r\n\x1f: 2\r\n: 3\r\n\r\n") == {"": "3"}


def test_the_client_parses_with_it() -> None:
    assert RenewingClient._parse_header_lines is headerlines.parse


async def test_a_delivered_message_keeps_its_headers(bus: Bus) -> None:
    sub = await bus.nc.subscribe("hdr.a")
    await bus.nc.publish("hdr.a", b"x", headers={"Nats-Msg-Id": "t:1", "traceparent": "00-1-2-01"})
    msg = await sub.next_msg(timeout=5)
    assert msg.headers == {"Nats-Msg-Id": "t:1", "traceparent": "00-1-2-01"}
