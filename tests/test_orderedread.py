"""The rebuilds' read path: messages straight from the parser, in order, none twice or skipped, headers as nats-py gives them."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import nats.aio.client
import pytest

from eventbus import history, orderedread, pubframe
from eventbus.connection import connect
from eventbus.errors import BusUnavailable
from eventbus.events import HostOnline, WorkAdded, encode, stamp
from eventbus.follow import follow
from eventbus.headerlines import parse
from eventbus.history import Record, replay
from eventbus.orderedread import _Gap, _Reader, headers_of
from eventbus.publisher import Publisher
from tests.bus_harness import provisioned_bus
from tests.event_samples import sample_event
from tests.helpers import eventually

ACK = b"$JS.ACK.RR_EVENTS.c1.1.%d.%d.1733500000000000000.%d"


def _mixed(count: int) -> list[WorkAdded | HostOnline]:
    return [sample_event(HostOnline, i) if i % 4 == 0 else sample_event(WorkAdded, i, work_id=f"w-{i % 5}") for i in range(count)]


# --- headers ---------------------------------------------------------------------------------------------------

def test_a_block_with_only_the_publishers_dedupe_id_gives_no_headers() -> None:
    assert headers_of(None) is None
    assert headers_of(b"NATS/1.0\r\nNats-Msg-Id: 01HX-abc\r\n\r\n") is None


def test_a_fenced_decisions_block_gives_no_headers_either() -> None:
    # A leader reads each of its decisions back: the fence's lines are the server's check, read by no fold.
    fence = pubframe.fence_lines(12, "rr.evt.leader.scheduler.LEADER_ELECTED.*")
    assert headers_of(pubframe.header_block("leader:00ff", fence)) is None
    assert headers_of(pubframe.header_block("leader:00ff", pubframe.expected_lines(3, "rr.evt.work.w-1.>"))) is None


@pytest.mark.parametrize("block", [
    b"NATS/1.0\r\nNats-Msg-Id: a\r\nNats-Stream-Source: KV_rr_leases 7\r\n\r\n",
    b"NATS/1.0\r\nNats-Stream-Source: KV_rr_leases 7\r\nNats-Msg-Id: a\r\n\r\n",
    b"NATS/1.0\r\ntraceparent: 00-ab-cd-01\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id:\r\nx: y\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id: a\r\nNats-Expected-Last-Subject-Sequence: 3\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id: a\r\nNats-Expected-Last-Subject-Sequence-Subject: f\r\nNats-Expected-Last-Subject-Sequence: 3\r\n\r\n",
    pubframe.header_block("a", pubframe.fence_lines(3, "f"), "00-ab-cd-01"),
    b"NATS/1.0\r\nNats-Msg-Id: a\r\nNats-Expected-Last-Subject-Sequence: 3\r\nNats-Expected-Last-Subject-Sequence-Subject: f\r\nx: y\r\n\r\n",
])
def test_any_other_block_is_parsed_as_nats_py_parses_it(block: bytes) -> None:
    assert headers_of(block) == parse(block[len(b"NATS/1.0\r\n"):])


# --- the reader's checks, one message at a time ---------------------------------------------------------------

async def test_the_reader_hands_stored_messages_over_in_order_and_ends_when_nothing_is_pending() -> None:
    got: list[tuple[int, str, bytes, Any]] = []
    reader = _Reader(lambda *r: got.append(r), end=100, stop=None)
    assert reader(b"rr.evt.a", ACK % (5, 1, 2), b"x", b"NATS/1.0\r\nNats-Msg-Id: 1\r\n\r\n") is None
    assert reader(b"rr.evt.b", ACK % (9, 2, 1), b"y", b"NATS/1.0\r\nNats-Msg-Id: 2\r\nk: v\r\n\r\n") is None
    assert not reader.finished.done()
    reader(b"rr.evt.c", ACK % (12, 3, 0), b"z", None)
    assert got == [(5, "rr.evt.a", b"x", None), (9, "rr.evt.b", b"y", {"Nats-Msg-Id": "2", "k": "v"}), (12, "rr.evt.c", b"z", None)]
    assert reader.finished.done() and reader.last_seq == 12


async def test_a_record_past_the_end_is_not_handed_over_and_ends_the_read() -> None:
    got: list[int] = []
    reader = _Reader(lambda seq, *_: got.append(seq), end=6, stop=None)
    reader(b"s", ACK % (5, 1, 9), b"x", None)
    reader(b"s", ACK % (8, 2, 8), b"x", None)
    assert got == [5] and reader.finished.done()


async def test_a_skipped_delivery_is_a_gap_and_nothing_after_it_is_handed_over() -> None:
    got: list[int] = []
    reader = _Reader(lambda seq, *_: got.append(seq), end=100, stop=None)
    reader(b"s", ACK % (5, 1, 9), b"x", None)
    reader(b"s", ACK % (7, 3, 7), b"x", None)  # delivery 2 never arrived
    reader(b"s", ACK % (8, 4, 6), b"x", None)
    assert got == [5] and reader.last_seq == 5
    with pytest.raises(_Gap):
        reader.finished.result()


async def test_flow_control_and_a_stalled_heartbeat_are_answered_and_a_heartbeat_ahead_is_a_gap() -> None:
    reader = _Reader(lambda *_: None, end=100, stop=None)
    reader(b"s", ACK % (5, 1, 9), b"x", None)
    assert reader(b"inbox", b"$JS.FC.RR_EVENTS.c1.7", b"", b"NATS/1.0 100 FlowControl Request\r\n\r\n") == "$JS.FC.RR_EVENTS.c1.7"
    beat = b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1\r\nNats-Last-Stream: 5\r\n"
    assert reader(b"inbox", b"", b"", beat + b"\r\n") is None
    assert reader(b"inbox", b"", b"", beat + b"Nats-Consumer-Stalled: $JS.FC.x\r\n\r\n") == "$JS.FC.x"
    assert not reader.finished.done()
    reader(b"inbox", b"", b"", b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 3\r\nNats-Last-Stream: 9\r\n\r\n")
    with pytest.raises(_Gap):
        reader.finished.result()


async def test_a_consumer_deleted_under_the_reader_is_read_again() -> None:
    reader = _Reader(lambda *_: None, end=100, stop=None)
    reader(b"inbox", b"", b"", b"NATS/1.0 409 Consumer Deleted\r\n\r\n")
    with pytest.raises(_Gap):
        reader.finished.result()


# --- against a server ---------------------------------------------------------------------------------------

async def _both_ways(bus: Any, **kwargs: Any) -> tuple[list[Record], list[Record]]:
    direct: list[Record] = []
    assert await replay(bus, direct.append, **kwargs) == len(direct)
    through_msgs: list[Record] = []
    end = kwargs.pop("end_seq", None) or await history.last_sequence(bus)
    filters = [kwargs.pop("subject", "rr.evt.>")]
    count = await history._read_msgs(bus, through_msgs.append, "RR_EVENTS", filters, kwargs.pop("start_seq", 1),
                                     None, end, 10.0, None)
    assert count == len(through_msgs)
    return direct, through_msgs


async def test_the_direct_read_gives_what_nats_pys_ordered_consumer_gives_but_the_dedupe_id(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        assert orderedread.supported(bus)
        await Publisher(bus).publish_many(_mixed(30))
        event = stamp(sample_event(HostOnline, 99), bus.node_id)
        await bus.js.publish(event.subject(), encode(event), headers={"Nats-Msg-Id": event.id, "traceparent": "00-ab-cd-01"})
        await bus.js.publish(event.subject(), encode(event))  # no header block at all
        await Publisher(bus).publish_many(_mixed(10))
        for kwargs in ({}, {"start_seq": 12, "end_seq": 35}, {"subject": "rr.evt.host.>"}):
            direct, through_msgs = await _both_ways(bus, **kwargs)
            assert [(r.seq, r.subject, r.data) for r in direct] == [(r.seq, r.subject, r.data) for r in through_msgs]
            expected = [None if r.headers is None or set(r.headers) == {"Nats-Msg-Id"} else r.headers for r in through_msgs]
            assert [r.headers for r in direct] == expected
        assert {"traceparent": "00-ab-cd-01", "Nats-Msg-Id": event.id} in [r.headers for r in direct]


async def test_a_message_lost_on_the_way_is_read_again_from_the_server_and_nothing_is_handed_over_twice(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_mixed(200))
        client: Any = bus.nc
        dropped: list[int] = []

        class Losing(dict):  # type: ignore[type-arg]
            # The client's table of raw handlers, losing the 50th message of the first consumer on the way.
            def __setitem__(self, sid: int, handler: Any) -> None:
                def lossy(subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> str | None:
                    if not dropped and reply.startswith(b"$JS.ACK") and reply.split(b".")[6] == b"50":
                        dropped.append(sid)
                        return None
                    return handler(subject, reply, data, block)
                super().__setitem__(sid, lossy)

        client.direct = Losing()
        records: list[Record] = []
        assert await replay(bus, records.append) == 200
        assert dropped and [r.seq for r in records] == list(range(1, 201))


async def test_a_long_read_answers_flow_control_and_finishes(nats_url: str) -> None:
    # Without its flow-control answers the server stops pushing after a window: the read would stall.
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_mixed(6000))
        client: Any = bus.nc
        answered: list[str] = []
        publish = client.publish

        async def counting(subject: str, *args: Any, **kwargs: Any) -> None:
            if subject.startswith("$JS.FC."):
                answered.append(subject)
            await publish(subject, *args, **kwargs)

        client.publish = counting
        seqs: list[int] = []
        assert await replay(bus, lambda r: seqs.append(r.seq), idle_timeout=5.0) == 6000
        assert seqs == list(range(1, 6001)) and answered


@pytest.mark.parametrize("hooks", [True, False], ids=["direct", "nats-py's ordered consumer"])
async def test_nothing_more_is_pushed_to_the_connection_once_a_read_ended_at_its_end_sequence(
        nats_url: str, monkeypatch: pytest.MonkeyPatch, hooks: bool) -> None:
    # A pass folds a read to a point and then holds the loop settling and encoding its state: what the
    # consumer pushed past the end must be off the socket when the read returns, or it waits in the
    # server's buffer past its write deadline and the server drops the connection as a slow consumer.
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_mixed(4000))
        monkeypatch.setattr(orderedread, "NATS_PY_HOOKS", hooks)
        assert await replay(bus, lambda _r: None, end_seq=100) == 100
        received = bus.nc.stats["in_msgs"]
        time.sleep(0.2)  # the loop held by a CPU-bound step, as after a pass's read: the server pushes meanwhile if it may
        await bus.nc.flush()
        assert bus.nc.stats["in_msgs"] == received, "records were pushed to the read after it returned"


async def test_a_flush_sends_the_commands_queued_before_it_ahead_of_its_ping(nats_url: str) -> None:
    # `drained` relies on it: the pong must come after the server took the read's UNSUB, or the
    # consumer pushes on past the pong (seen: hundreds of records, now and then, in the test above).
    bus = await connect(nats_url, node_id="n")
    try:
        client: Any = bus.nc
        sub = await client.subscribe("x")
        await client.flush()
        written: list[bytes] = []
        transport = client._transport  # noqa: SLF001 - the order on the wire is what is checked
        write, writelines = transport.write, transport.writelines
        transport.write = lambda data: (written.append(bytes(data)), write(data))[1]
        transport.writelines = lambda lines: (written.extend(bytes(line) for line in lines), writelines(lines))[1]
        try:
            await sub.unsubscribe()
            await client.flush()
        finally:
            transport.write, transport.writelines = write, writelines
        kinds = [line.split(b" ")[0].strip() for line in written]
        assert kinds.index(b"UNSUB") < kinds.index(b"PING"), kinds
    finally:
        await bus.close()


async def test_a_handler_that_raises_does_not_drop_the_connection(nats_url: str) -> None:
    bus = await connect(nats_url, node_id="n")
    try:
        client: Any = bus.nc
        sub = await client.subscribe("boom")
        client.direct[sub._id] = lambda *_: 1 / 0
        await client.publish("boom", b"x")
        await client.flush()
        answer = await client.request("$JS.API.INFO", b"", timeout=5)  # the connection still works
        assert answer.data and client.is_connected
    finally:
        await bus.close()


async def test_a_record_the_reader_cannot_handle_is_skipped_and_reading_goes_on(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_mixed(20))
        seen: list[int] = []

        def picky(record: Record) -> None:
            seen.append(record.seq)
            if record.seq == 7:
                raise ValueError("a reader's bug")

        assert await replay(bus, picky) == 20
        assert seen == list(range(1, 21))


async def test_a_server_that_keeps_losing_the_first_message_makes_the_read_fail_instead_of_spinning(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_mixed(5))
        client: Any = bus.nc
        consumers: list[int] = []

        class Losing(dict):  # type: ignore[type-arg]
            # Every consumer's first delivery lost on the way: no read can make progress.
            def __setitem__(self, sid: int, handler: Any) -> None:
                consumers.append(sid)

                def lossy(subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> str | None:
                    if reply.startswith(b"$JS.ACK") and reply.split(b".")[6] == b"1":
                        return None
                    return handler(subject, reply, data, block)
                super().__setitem__(sid, lossy)

        client.direct = Losing()
        with pytest.raises(BusUnavailable, match="lost messages before the first"):
            await replay(bus, lambda _r: None)
        assert len(consumers) == orderedread.MAX_FRUITLESS


async def test_a_nats_py_without_the_hand_over_hooks_reads_through_its_own_ordered_consumer(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The installed nats-py has both hooks: if an upgrade renames one, this says so before the fast path goes quiet.
    assert orderedread.NATS_PY_HOOKS
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_mixed(20))
        fast: list[Record] = []
        assert await replay(bus, fast.append) == 20
        monkeypatch.setattr(orderedread, "NATS_PY_HOOKS", False)
        assert not orderedread.supported(bus)
        slow: list[Record] = []
        assert await replay(bus, slow.append) == 20
        assert [(r.seq, r.subject, r.data) for r in slow] == [(r.seq, r.subject, r.data) for r in fast]


async def test_a_consumers_creation_waits_as_long_as_the_bus_allows_and_a_slow_one_is_logged(
        nats_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # A year's log under load took longer than the default to create a consumer on: a bench (or a tool) allows more.
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_mixed(20))
        bus.api_timeout_s = 1e-6  # less than any answer takes
        with pytest.raises(BusUnavailable, match="creating a reader"):
            await replay(bus, lambda _r: None)
        bus.api_timeout_s = 10.0
        monkeypatch.setattr(orderedread, "SLOW_CREATION_S", 0.0)
        with caplog.at_level(logging.INFO, logger="eventbus.orderedread"):
            assert await replay(bus, lambda _r: None, start_seq=5) == 16
        assert "creating its consumer (start 5, 1 filters) took" in caplog.text


# --- following live (eventbus/follow.py) ------------------------------------------------------------------------

async def _followed(bus: Any, count: int, live: int) -> list[Record]:
    # Follows from seq 1 while `live` more records are appended, until `count` have arrived.
    records: list[Record] = []
    following = asyncio.create_task(follow(bus, records.append, start_seq=1))
    try:
        await eventually(lambda: len(records) >= count - live, message="the backlog was not handed over")
        await Publisher(bus).publish_many(_mixed(live))
        await eventually(lambda: len(records) >= count, message="the live records were not handed over")
    finally:
        following.cancel()
        await asyncio.wait([following], timeout=10)
    return records


async def test_following_live_gives_what_nats_pys_ordered_consumer_gives_with_no_msg_per_record(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A leader folds two stored events per assignment as they come: nats-py's Msg, header dict,
    # queue and task switch for each were a fifth of its CPU (ops/bench/README.md).
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_mixed(20))
        event = stamp(sample_event(HostOnline, 99), bus.node_id)
        await bus.js.publish(event.subject(), encode(event), headers={"Nats-Msg-Id": event.id, "traceparent": "00-ab-cd-01"})
        through_msgs: list[int] = []
        real = nats.aio.client.Client._process_msg

        async def counted(client: Any, sid: int, subject: bytes, *args: Any) -> None:
            if subject.startswith(b"rr.evt."):  # a record (the API's answers go this way, as before)
                through_msgs.append(sid)
            await real(client, sid, subject, *args)

        monkeypatch.setattr(nats.aio.client.Client, "_process_msg", counted)
        direct = await _followed(bus, 41, 20)
        assert through_msgs == [], "records went through nats-py's Msg path"
        monkeypatch.setattr(orderedread, "NATS_PY_HOOKS", False)
        slow = await _followed(bus, 61, 20)
        assert through_msgs, "nats-py's own path was not taken without the hooks"
        assert [(r.seq, r.subject, r.data) for r in direct] == [(r.seq, r.subject, r.data) for r in slow[:41]]
        expected = [None if r.headers is None or set(r.headers) == {"Nats-Msg-Id"} else r.headers for r in slow[:41]]
        assert [r.headers for r in direct] == expected
        assert [r.seq for r in slow] == list(range(1, 62))


async def test_a_followed_consumer_gone_silent_is_replaced_and_nothing_is_lost_or_handed_over_twice(
        nats_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # The server lost the consumer without a word (no heartbeat comes): nats-py's ordered consumer
    # notices after two missed heartbeats and starts anew after its last record; so does this one.
    monkeypatch.setattr(orderedread, "SILENT_S", 0.3)  # shorter than the server's heartbeat (HEARTBEAT_S)
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_mixed(10))
        consumers: list[Any] = []
        create = orderedread._created

        async def counted(*args: Any) -> Any:
            consumers.append(await create(*args))
            return consumers[-1]

        monkeypatch.setattr(orderedread, "_created", counted)
        records: list[Record] = []
        with caplog.at_level(logging.WARNING, logger="eventbus.orderedread"):
            following = asyncio.create_task(follow(bus, records.append, start_seq=1))
            try:
                await eventually(lambda: len(records) == 10 and len(consumers) >= 3, message="a silent consumer was not replaced")
                await Publisher(bus).publish_many(_mixed(5))
                await eventually(lambda: len(records) >= 15, message="a record after the replacement was lost")
            finally:
                following.cancel()
                await asyncio.wait([following], timeout=10)
        assert [r.seq for r in records] == list(range(1, 16))
        assert "following RR_EVENTS: a message or the consumer lost after seq 10" in caplog.text
