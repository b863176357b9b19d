"""The leader process's collector: the folded state frozen after the catch-up, no full collection during a burst."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from config.sections.scheduler import SchedulerSettings
from eventbus import events as ev
from eventbus.connection import Bus
from eventbus.history import Record
from eventbus.publisher import Publisher
from projections.base import Folder
from services.leader import collector, queue
from tests.scheduler_harness import online, run_scheduler, stop

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def restored_collector() -> Iterator[None]:
    """The test process's collector as it was, whatever the test set."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def added(count: int) -> list[Record]:
    """`count` WORK_ADDED records as the log holds them."""
    out = []
    for i in range(count):
        event = ev.stamp(ev.WorkAdded(work_id=f"w-{i:06d}", work_type="selfplay", board_type="hex8", num_players=2,
                                      num_games=2, requested_by="test"), "test")
        out.append(Record(i + 1, event.subject(), ev.encode(event), None))
    return out


def collections_while(fold: Any, records: list[Record]) -> list[int]:
    """How many collections of each generation ran while `fold` took every record (and was read after each)."""
    with collector.counted() as counts:
        for record in records:
            fold(record)
            fold.state  # noqa: B018 - the assigner reads the state between records, as a round does
    return counts


def test_settling_freezes_what_is_held_and_makes_young_collections_rarer(restored_collector: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    collector.settle_after_catch_up()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (collector.LEADER_GEN0_THRESHOLD, 10, 10)
    gc.set_threshold(100_000, 10, 10)
    collector.settle_after_catch_up()
    assert gc.get_threshold()[0] == 100_000, "a process set for rarer collections is left as it is"


def test_a_burst_folded_after_settling_runs_no_full_collection(restored_collector: None) -> None:
    records = added(20_000)
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    gc.collect()
    before = collections_while(Folder(queue.PROJECTION), records)
    assert before[1] >= 3, "the default collector runs middle collections all through a burst"
    collector.settle_after_catch_up()
    after = collections_while(Folder(queue.PROJECTION), records)
    assert after[2] == 0, f"full collections during the burst: {after}"
    assert after[1] == 0, f"middle collections during the burst: {after}"


async def test_the_assigner_settles_the_collector_once_caught_up(bus: Bus, eventually: Any, restored_collector: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    await online(Publisher(bus), "n1")
    scheduler = await run_scheduler(bus, SchedulerSettings())
    try:
        await eventually(lambda: gc.get_threshold()[0] == collector.LEADER_GEN0_THRESHOLD, timeout=10,
                         message="the collector set after the assigner's catch-up")
        assert gc.get_freeze_count() > 0
    finally:
        await stop(scheduler)
    assert gc.get_threshold() == (700, 10, 10), "the collector's thresholds as they were once the assigner stopped"
    assert gc.get_freeze_count() == 0, "what was frozen back in the collector's reach once the assigner stopped"
