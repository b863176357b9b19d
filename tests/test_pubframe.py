"""Our own publish frame: byte for byte nats-py's for the same headers, and what the server stores from it."""

from __future__ import annotations

import asyncio

import msgspec
import nats.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client

from eventbus import pubframe
from eventbus.connection import Bus
from eventbus.events import LeaderElected, WorkAdded, encode
from eventbus.publisher import FenceToken, Publisher
from eventbus.streams import EVENTS_STREAM
from eventbus.subjects import election_filter
from tests.bus_harness import provisioned_bus
from tests.event_samples import sample_event

# Values that make header lines interesting: surrounding and inner whitespace, line breaks, non-ASCII.
_VALUE = st.lists(st.sampled_from(["node-1:00ff", " ", "\t", "\r", "\n", "\r\n", "é", "x", ":", "-"]), max_size=8).map("".join)


class _Captured(Client):
    """nats-py's client, unconnected, keeping the commands its publish would queue."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    async def _send_command(self, cmd: bytes, priority: bool = False) -> None:
        self.sent.append(cmd)


def _nats_py_frame(subject: str, reply: str, headers: dict[str, str], payload: bytes) -> bytes:
    client = _Captured()
    asyncio.run(client._send_publish(subject, reply, payload, len(payload), headers))
    [frame] = client.sent
    return frame


@given(msg_id=_VALUE, trace=st.none() | _VALUE, seq=st.integers(0, 2**63), fenced=st.booleans(),
       payload=st.binary(max_size=64))
def test_the_frame_is_nats_pys_for_the_same_headers(msg_id: str, trace: str | None, seq: int, fenced: bool, payload: bytes) -> None:
    subject, reply, subject_filter = "rr.evt.work.w-1.WORK_ASSIGNED.n", "_INBOX.abc.7", "rr.evt.leader.scheduler.LEADER_ELECTED.*"
    headers = {"Nats-Msg-Id": msg_id}
    if fenced:
        headers |= {"Nats-Expected-Last-Subject-Sequence": str(seq), "Nats-Expected-Last-Subject-Sequence-Subject": subject_filter}
    if trace:
        headers["traceparent"] = trace
    block = pubframe.header_block(msg_id, pubframe.expected_lines(seq, subject_filter) if fenced else b"", trace)
    assert pubframe.hpub_frame(subject, reply, block, payload) == _nats_py_frame(subject, reply, headers, payload)
    assert pubframe.parsed(block) == {name: value.strip().replace("\r", " ").replace("\n", " ").strip()
                                      for name, value in headers.items()}


def test_a_terms_fence_lines_are_encoded_once() -> None:
    first = pubframe.fence_lines(42, "rr.evt.leader.scheduler.LEADER_ELECTED.*")
    assert pubframe.fence_lines(42, "rr.evt.leader.scheduler.LEADER_ELECTED.*") is first
    assert first == pubframe.expected_lines(42, "rr.evt.leader.scheduler.LEADER_ELECTED.*")


async def test_the_server_stores_a_fenced_decisions_headers_as_from_nats_pys_publish(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="a") as bus:
        pub = Publisher(bus)
        elected = await pub.publish(LeaderElected(role="scheduler", node="a", epoch=5))
        fence = FenceToken(election_filter("scheduler"), elected.seq)
        stored = await pub.publish(msgspec.structs.replace(sample_event(WorkAdded), trace="00-ab-cd-01"), fence=fence)
        msg = await bus.js.get_msg(EVENTS_STREAM, stored.seq)
        assert msg.headers == {"Nats-Msg-Id": stored.event.id, "Nats-Expected-Last-Subject-Sequence": str(elected.seq),
                               "Nats-Expected-Last-Subject-Sequence-Subject": fence.subject_filter,
                               "traceparent": "00-ab-cd-01"}
        assert msg.data == encode(stored.event)


async def test_publish_block_refuses_what_nats_pys_publish_refuses(bus: Bus) -> None:
    block = pubframe.header_block("t:1")
    with pytest.raises(nats.errors.BadSubjectError):
        await bus.nc.publish_block("a b", "", block, b"x")  # type: ignore[attr-defined]
    with pytest.raises(nats.errors.BadSubjectError):
        await bus.nc.publish_block("a", "reply\r\nPUB x 1", block, b"x")  # type: ignore[attr-defined]
    with pytest.raises(nats.errors.MaxPayloadError):
        await bus.nc.publish_block("a", "", block, b"x" * (bus.nc.max_payload + 1))  # type: ignore[attr-defined]
    sub = await bus.nc.subscribe("hdr.b")
    await bus.nc.publish_block("hdr.b", "", block, b"body")  # type: ignore[attr-defined]
    msg = await sub.next_msg(timeout=5)
    assert (msg.data, msg.headers) == (b"body", {"Nats-Msg-Id": "t:1"})
    await bus.nc.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await bus.nc.publish_block("hdr.b", "", block, b"body")  # type: ignore[attr-defined]
