"""Reading the log back: exact ranges, filters, start times, decoded events, and quick answers when there is nothing."""

from __future__ import annotations

import gc
import time

import pytest

from eventbus.connection import connect
from eventbus.errors import BusUnavailable, InvalidEvent
from eventbus.events import HostOnline, WorkAdded, decode, utcnow
from eventbus.history import Record, events, last_sequence, replay
from eventbus.publisher import Published, Publisher
from eventbus.subjects import aggregate_filter
from tests.bus_harness import provisioned_bus
from tests.event_samples import sample_event


def _mixed(count: int) -> list[WorkAdded | HostOnline]:
    return [sample_event(HostOnline, i) if i % 4 == 0 else sample_event(WorkAdded, i, work_id=f"w-{i % 5}") for i in range(count)]


async def _read(bus, **kwargs) -> list[Record]:  # type: ignore[no-untyped-def]
    records: list[Record] = []
    count = await replay(bus, records.append, **kwargs)
    assert count == len(records)
    return records


async def test_replay_returns_exactly_the_requested_range(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        published = await Publisher(bus).publish_many(_mixed(100))
        assert [r.seq for r in await _read(bus, start_seq=30, end_seq=60)] == list(range(30, 61))
        assert [r.seq for r in await _read(bus, start_seq=95)] == list(range(95, 101))
        assert [r.seq for r in await _read(bus, end_seq=7)] == list(range(1, 8))
        assert [r.seq for r in await _read(bus, start_seq=42, end_seq=42)] == [42]
        middle = await _read(bus, start_seq=10, end_seq=20)
        assert [decode(r.data) for r in middle] == [p.event for p in published[9:20]]


async def test_replay_with_a_filter_and_a_range(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        published = await Publisher(bus).publish_many(_mixed(100))
        subject = aggregate_filter("work", "w-3")
        wanted = [p.seq for p in published if isinstance(p.event, WorkAdded) and p.event.work_id == "w-3" and 20 <= p.seq <= 70]
        got = await _read(bus, subject=subject, start_seq=20, end_seq=70)
        assert [r.seq for r in got] == wanted and wanted


async def test_the_cyclic_collector_is_paused_while_the_log_is_read_and_resumes_after(nats_url: str) -> None:
    # A rebuild builds a large state without cycles: the collector's passes over it would find nothing.
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_mixed(20))
        collecting: list[bool] = []
        assert gc.isenabled()
        assert await replay(bus, lambda _record: collecting.append(gc.isenabled())) == 20
        assert collecting == [False] * 20 and gc.isenabled()


async def test_replay_from_a_point_in_time(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        pub = Publisher(bus)
        await pub.publish_many(_mixed(10))
        since = utcnow()  # after the first batch was acked, so after it was stored
        later = await pub.publish_many(_mixed(5))
        assert [r.seq for r in await _read(bus, start_time=since)] == [p.seq for p in later]


async def test_nothing_to_read_returns_zero_at_once(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        started = time.monotonic()
        assert await _read(bus) == [], "empty stream"
        await Publisher(bus).publish_many(_mixed(20))
        assert await _read(bus, subject=aggregate_filter("work", "no-such-item")) == []
        assert await _read(bus, subject=aggregate_filter("work", "w-1"), start_seq=20) == []
        assert await _read(bus, start_seq=21) == []
        assert await _read(bus, start_seq=15, end_seq=14) == []
        # Far below the 10 s idle timeout a stalled read would take.
        assert time.monotonic() - started < 3.0


async def test_events_decodes_in_order_and_yields_invalid_ones_as_errors(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        pub = Publisher(bus)
        first: Published = await pub.publish(sample_event(WorkAdded))
        await bus.js.publish("rr.evt.work.w-0.BROKEN.node-a", b"{not json")
        last = await pub.publish(sample_event(HostOnline))
        got = [item async for item in events(bus)]
        assert [seq for seq, _ in got] == [1, 2, 3]
        assert got[0][1] == first.event and got[2][1] == last.event
        assert isinstance(got[1][1], InvalidEvent) and "malformed" in str(got[1][1])
        assert await last_sequence(bus) == 3


async def test_reading_before_the_streams_exist_says_how_to_create_them(nats_url: str) -> None:
    bus = await connect(nats_url, node_id="node-a")
    try:
        with pytest.raises(BusUnavailable, match="rr streams init"):
            await last_sequence(bus)
        with pytest.raises(BusUnavailable, match="rr streams init"):
            await replay(bus, lambda r: None)
    finally:
        await bus.close()
