"""An aggregate's records read by batched direct gets equal an ordered consumer's, whatever the batch, range or headers."""

from __future__ import annotations

import pytest

from eventbus import directreads
from eventbus.errors import BusUnavailable
from eventbus.history import Record, last_sequence, replay
from eventbus.publisher import Publisher
from eventbus.subjects import aggregate_filter, event_subject
from ops.bench.bench_projection import fleet_log
from tests.bus_harness import provisioned_bus


async def test_an_aggregates_records_by_direct_gets_equal_an_ordered_consumers_in_any_range_and_batch(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(list(fleet_log(1_500)))
        # A record with headers of its own (a trace context, a message id): they stay, the server's go.
        await bus.js.publish(event_subject("work", "w-00000010", "WORK_PROGRESS", "gpu-2"), b"{}",
                             headers={"Nats-Msg-Id": "gpu-2-7", "Traceparent": "00-ab-cd-01"})
        end = await last_sequence(bus)
        for subject in (aggregate_filter("work", "w-00000010"), aggregate_filter("work", "w-00000099"),
                        aggregate_filter("host", "gpu-05"), aggregate_filter("work", "no-such")):
            for start, stop in ((1, end), (300, 900), (end, end)):
                expected: list[Record] = []
                await replay(bus, expected.append, subject=subject, start_seq=start, end_seq=stop)
                for batch in (1, 3, directreads.BATCH):
                    got = await directreads.read_aggregate(bus, subject, start, stop, batch=batch)
                    assert got == expected, (subject, start, stop, batch)
        mine = await directreads.read_aggregate(bus, aggregate_filter("work", "w-00000010"), 1, end)
        assert mine[-1].headers == {"Nats-Msg-Id": "gpu-2-7", "Traceparent": "00-ab-cd-01"}
        both, read = await directreads.read_aggregates(bus, [aggregate_filter("work", "w-00000010"),
                                                             aggregate_filter("work", "w-00000011")], 1, end)
        assert read == len(both)  # keyed by sequence, none twice
        assert {r.subject.split(".")[3] for r in both.values()} == {"w-00000010", "w-00000011"}


async def test_a_stream_that_does_not_exist_is_a_bus_error_that_says_so(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        with pytest.raises(BusUnavailable, match="no server answers direct gets on stream NO_SUCH"):
            await directreads.read_aggregate(bus, "rr.evt.work.w-1.>", 1, 10, stream="NO_SUCH")


async def test_a_read_asks_for_one_record_then_for_no_more_than_the_server_says_are_left(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch larger than what is left makes the server scan the rest of the block for a match that is not there.
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(list(fleet_log(600)))
        end = await last_sequence(bus)
        expected: list[Record] = []
        await replay(bus, expected.append, subject=aggregate_filter("work", "w-00000010"))
        asked: list[int] = []
        batch = directreads._batch

        async def counted(bus_: object, stream: str, subject: str, seq: int, size: int) -> object:
            asked.append(size)
            return await batch(bus_, stream, subject, seq, size)  # type: ignore[arg-type]

        monkeypatch.setattr(directreads, "_batch", counted)
        assert await directreads.read_aggregate(bus, aggregate_filter("work", "w-00000010"), 1, end) == expected
        assert len(expected) > 2 and asked == [1, len(expected) - 1]
        asked.clear()
        assert await directreads.read_aggregate(bus, aggregate_filter("work", "w-00000010"), 1, end, batch=3) == expected
        assert asked[0] == 1 and all(size <= 3 for size in asked) and sum(asked) == len(expected)


async def test_the_newest_record_of_each_subject_at_a_point_equals_the_last_an_ordered_read_sees_there(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(list(fleet_log(2_000)))
        end = await last_sequence(bus)
        everything: list[Record] = []
        await replay(bus, everything.append, subject="rr.evt.host.>")
        for up_to in (0, 1, 40, end // 2, end - 1, end):
            newest = {r.subject: r for r in everything if r.seq <= up_to}  # later records replace earlier ones
            expected = sorted(newest.values(), key=lambda r: r.seq)
            for batch in (1, 7, directreads.BATCH):  # paged: each page goes on past the last record of the one before
                assert await directreads.last_per_subject(bus, "rr.evt.host.>", up_to, batch=batch) == expected, (up_to, batch)
        assert len({r.subject for r in everything}) > 7  # more subjects than the smaller pages hold
