"""The worker's consumers: one filter each, cheap to set up at a year's log; fences judged at each event's own position."""

from __future__ import annotations

import datetime as dt

import msgspec

from eventbus.consumer import EventConsumer
from eventbus.events import Event, LeaderElected, WorkAssigned, WorkCancelled, utcnow
from eventbus.publisher import Publisher
from eventbus.streams import EVENTS_STREAM
from eventbus.subjects import few_subjects
from services.worker.fencefeed import FenceFeed
from services.worker.service import assignments_spec, cancels_spec
from tests.bus_harness import provisioned_bus


def test_no_worker_durable_holds_several_filters_of_which_one_matches_many_subjects() -> None:
    # Such a consumer costs the server seconds of CPU to set up at 22M records (ops/bench/README.md).
    specs = (assignments_spec("gpu-1"), cancels_spec("gpu-1"))
    for spec in specs:
        assert len(spec.filter_subjects) == 1 or all(map(few_subjects, spec.filter_subjects)), spec
    assert {s.filter_subjects for s in specs} == {("rr.evt.*.*.WORK_ASSIGNED.*",), ("rr.evt.*.*.WORK_CANCELLED.*",)}
    assert len({s.durable for s in specs}) == len(specs)


def _assigned(work_id: str, epoch: int) -> WorkAssigned:
    return WorkAssigned(work_id=work_id, node="gpu-1", attempt=1, deadline=utcnow() + dt.timedelta(hours=1), epoch=epoch)


async def test_each_fence_knows_the_elections_stored_before_its_event_and_none_after(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="sched") as bus:
        publisher = Publisher(bus)

        async def stored(event: Event) -> tuple[Event, int]:
            published = await publisher.publish(event)
            return published.event, published.seq

        await stored(LeaderElected(role="scheduler", node="sched", ttl_s=3.0, epoch=7))
        feed = FenceFeed(bus, ("assignments", "cancels"))
        await feed.prime(("sched",))
        old_term = await stored(_assigned("w-1", 7))
        old_cancel = await stored(WorkCancelled(work_id="w-0", reason="", epoch=7))
        await stored(LeaderElected(role="scheduler", node="sched", ttl_s=3.0, epoch=9))  # after the priming read
        deposed = await stored(_assigned("w-2", 7))
        new_term = await stored(_assigned("w-3", 9))
        new_cancel = await stored(WorkCancelled(work_id="w-3", reason="", epoch=9))

        # The assignments' consumer delivers all of its own first: its fence reads the election of 9 before w-2.
        assert [await feed.admit("assignments", *judged) for judged in (old_term, deposed, new_term)] == [True, False, True]
        # The cancels' fence has not run ahead with it: the cancel of term 7 was stored while 7 led.
        assert [await feed.admit("cancels", *judged) for judged in (old_cancel, new_cancel)] == [True, True]
        assert feed.fence("cancels").newest("scheduler") == 9


async def test_a_worker_durable_of_the_four_filters_before_is_narrowed_keeping_its_position(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="sched") as bus:
        spec = assignments_spec("gpu-1")
        before = msgspec.structs.replace(spec, filter_subjects=(
            "rr.evt.*.*.WORK_ASSIGNED.*", "rr.evt.*.*.WORK_CANCELLED.*", "rr.evt.leader.>", "rr.evt.lease.>"))
        await EventConsumer(bus, before, {}).ensure()
        published = await Publisher(bus).publish(_assigned("w-1", 7))  # stored while no worker ran
        await EventConsumer(bus, spec, {}).ensure()
        info = await bus.js.consumer_info(EVENTS_STREAM, spec.durable)
        assert (info.config.filter_subject, info.config.filter_subjects or []) in (
            ("rr.evt.*.*.WORK_ASSIGNED.*", []), (None, ["rr.evt.*.*.WORK_ASSIGNED.*"]))
        assert info.num_pending == 1 and published.seq == 1
