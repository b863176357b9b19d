"""Publishing: stamped, deduplicated by id, conditional on the aggregate's last sequence, pipelined in bulk."""

from __future__ import annotations

from typing import Any

import nats.aio.client
import pytest

from eventbus import pubframe
from eventbus.connection import connect
from eventbus.errors import BusUnavailable, ConcurrencyConflict
from eventbus.events import HostOnline, WorkAdded, WorkStarted, decode, stamp
from eventbus.history import Record, last_sequence, replay
from eventbus.publisher import Publisher, _AckRouter, _ApiError, _PubAckReply
from eventbus.subjects import aggregate_filter
from tests.bus_harness import provisioned_bus
from tests.event_samples import sample_event


async def test_publish_stamps_the_event_and_reports_where_it_landed(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="gpu-7") as bus:
        published = await Publisher(bus).publish(sample_event(WorkAdded))
        assert published.seq == 1 and not published.duplicate
        assert published.event.id.startswith("gpu-7:")
        assert published.event.source == "gpu-7"
        assert published.event.ts is not None
        records: list[Record] = []
        await replay(bus, records.append)
        assert [decode(r.data) for r in records] == [published.event]


async def test_republishing_a_stamped_event_is_deduplicated(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        pub = Publisher(bus)
        first = await pub.publish(sample_event(WorkAdded))
        again = await pub.publish(first.event)
        assert not first.duplicate
        assert again.duplicate
        assert again.seq == first.seq, "the ack of a duplicate names the original's sequence"
        assert await last_sequence(bus) == 1


async def test_expected_last_sequence_guards_one_aggregate(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        pub = Publisher(bus)
        added = await pub.publish(sample_event(WorkAdded, work_id="w-1"), expect_last_seq=0)
        assert added.seq == 1, "0 means: the aggregate has no events yet"

        # Another aggregate moving on does not disturb the check on w-1.
        await pub.publish(sample_event(WorkAdded, work_id="w-2"))
        await pub.publish(sample_event(HostOnline, node="gpu-7"))
        started = await pub.publish(sample_event(WorkStarted, work_id="w-1"), expect_last_seq=added.seq)
        assert started.seq == 4

        stale = sample_event(WorkStarted, work_id="w-1", attempt=2)
        with pytest.raises(ConcurrencyConflict) as conflict:
            await pub.publish(stale, expect_last_seq=added.seq)
        assert conflict.value.subject_filter == aggregate_filter("work", "w-1")
        assert conflict.value.expected == added.seq
        with pytest.raises(ConcurrencyConflict):
            await pub.publish(sample_event(WorkAdded, work_id="w-1"), expect_last_seq=0)
        assert await last_sequence(bus) == 4, "a refused event stores nothing"

        after = await pub.publish(stale, expect_last_seq=started.seq)
        assert after.seq == 5 and not after.duplicate


async def test_publish_many_lands_every_event_once_in_order_and_a_retry_dedupes_all(nats_url: str) -> None:
    events = [sample_event(WorkAdded, i, work_id=f"w-{i % 97}") for i in range(5000)]
    async with provisioned_bus(nats_url) as bus:
        pub = Publisher(bus, window=512)  # a window smaller than the batch exercises the back-pressure path
        published = await pub.publish_many(events)
        assert [p.seq for p in published] == list(range(1, 5001))
        assert not any(p.duplicate for p in published)

        records: list[Record] = []
        assert await replay(bus, records.append) == 5000
        assert [r.seq for r in records] == list(range(1, 5001))
        assert [decode(r.data) for r in records] == [p.event for p in published]

        again = await pub.publish_many([p.event for p in published])
        assert all(p.duplicate for p in again)
        assert [p.seq for p in again] == [p.seq for p in published]
        assert await last_sequence(bus) == 5000


async def test_publish_without_streams_raises_bus_unavailable(nats_url: str) -> None:
    bus = await connect(nats_url, node_id="node-a")
    try:
        pub = Publisher(bus, ack_timeout=0.5, retry_for=0.3)
        with pytest.raises(BusUnavailable):
            await pub.publish(sample_event(WorkAdded))
        with pytest.raises(BusUnavailable):
            await pub.publish_many([sample_event(WorkAdded, i) for i in range(3)])
    finally:
        await bus.close()


def test_a_duplicate_id_still_in_process_is_retried_not_taken_as_a_refusal() -> None:
    # A retry that reaches a clustered stream while its first try is still being stored (a leader
    # change) is answered err_code 10158; the publish loop must try again, as for any unavailability.
    busy = _PubAckReply(error=_ApiError(code=400, err_code=10158, description="duplicate message id is in process"))
    event = stamp(WorkStarted(work_id="w", node="n", attempt=1), "n")
    with pytest.raises(BusUnavailable, match="10158"):
        Publisher._published(event, busy, None)


async def test_acks_that_never_come_are_forgotten_in_bulk_and_answered_ones_at_once(nats_url: str) -> None:
    # A subscriber that never answers stands for acks lost to a server away: their futures are
    # cancelled by the caller's timeout and must not pile up in the router for the process's life.
    async with provisioned_bus(nats_url) as bus:
        await bus.nc.subscribe("silent.>")
        router = _AckRouter(bus, purge_at=16)
        for i in range(200):
            (await router.send(f"silent.{i}", b"x", pubframe.header_block(f"t:{i}"))).cancel()
        assert len(router._futures) <= 32, "abandoned futures are dropped once the map has doubled"
        waiting = [await router.send(f"silent.w{i}", b"x", pubframe.header_block(f"t:w{i}")) for i in range(40)]
        assert all(not f.done() for f in waiting) and all(f in router._futures.values() for f in waiting)
        published = await Publisher(bus).publish(sample_event(WorkAdded))
        assert published.seq == 1
        pub = Publisher(bus)
        await pub.publish_many([sample_event(WorkAdded, i) for i in range(1, 50)])
        assert pub._router._futures == {}, "an answered ack leaves the router as it arrives"


async def test_acks_are_taken_straight_from_the_parser_and_no_responders_still_fails_the_publish(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A leader receives one ack per decision: nats-py's Msg, header dict, queue and task switch
    # for each were part of its CPU per assignment (ops/bench/README.md).
    acks: list[bytes] = []
    real = nats.aio.client.Client._process_msg

    async def counted(client: Any, sid: int, subject: bytes, *args: Any) -> None:
        if subject.startswith(b"_INBOX.") and not subject.startswith(bytes(client._resp_sub_prefix or b"-")):
            acks.append(subject)  # not an answer to the client's own requests (stream info and the like)
        await real(client, sid, subject, *args)

    monkeypatch.setattr(nats.aio.client.Client, "_process_msg", counted)
    bus = await connect(nats_url, node_id="node-a")  # no stream yet: the server answers a publish "503"
    try:
        with pytest.raises(BusUnavailable, match="no responders"):
            await (await _AckRouter(bus).send("rr.evt.work.w.WORK_ADDED.n", b"{}", pubframe.header_block("t:1")))
    finally:
        await bus.close()
    async with provisioned_bus(nats_url) as bus:
        pub = Publisher(bus)
        await pub.publish_many([sample_event(WorkAdded, i) for i in range(20)])
        assert (await pub.publish(sample_event(WorkAdded, 99))).seq == 21
    assert acks == [], "acks went through nats-py's Msg path"
