"""The work-ref entries' position kept close to the log's end: written between snapshot saves, and what a timeline starts from."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from cli.commands.timeline import kept_start, read_timeline, timeline_start
from eventbus.history import last_sequence
from eventbus.kventries import get_entry
from eventbus.publisher import Publisher
from eventbus.tasks import stop_tasks
from ops.bench.bench_projection import fleet_log
from projections import timelinestart, workrefs
from projections.base import fold_events
from projections.bundle import fold_all_events
from projections.timeline import Selector
from projections.workrefs import Position
from servicekit import workrefentries
from servicekit.rebuild import state_at_seq
from servicekit.snapshotting import save_state
from servicekit.workrefentries import BUCKET, POSITION_KEY, EntryWriter, lookup
from services.api import keeper
from tests.api_harness import fleet_log as api_fleet_log
from tests.api_harness import running_api, wait_caught_up
from tests.bus_harness import provisioned_bus
from tests.lostcancel import LosingACancel, stopped_on_one_cancel
from tests.test_timeline_reads import _whole


def test_the_start_a_timeline_expects_is_the_newest_named_snapshot_before_its_first_record() -> None:
    position = Position(last_seq=5_000, starts=(1_000, 2_000, 4_000))
    assert kept_start(position, 0) == 0  # a first record at seq 1: nothing before it
    assert kept_start(position, 2_500) == 2_000 and kept_start(position, 2_000) == 2_000
    assert kept_start(position, 999) == 0  # none kept that far back, and the position covers it
    assert kept_start(position, 9_000) == 4_000  # past the position: the newest it names still loads
    assert kept_start(Position(last_seq=500, starts=(1_000,)), 900) is None  # one kept since may be newer: the listing says
    assert kept_start(Position(last_seq=5_000), 2_500) is None and kept_start(None, 2_500) is None


async def test_the_expected_start_is_the_one_timeline_start_loads(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(list(fleet_log(1_500)))
        for seq in (400, 800, 1_200):
            await save_state(bus, timelinestart.PROJECTION, (await state_at_seq(bus, timelinestart.PROJECTION, seq)).state)
        position = Position(last_seq=1_300, starts=(400, 800, 1_200))
        for bound in (0, 1, 399, 400, 401, 799, 1_250, 1_400):
            start = await timeline_start(bus, bound, None, position)
            assert kept_start(position, bound) == (start.last_seq if start is not None else 0), bound


async def test_a_save_behind_a_later_write_writes_nothing_and_the_next_write_names_the_snapshots_saved_since(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with provisioned_bus(nats_url) as bus:
        log = list(enumerate(fleet_log(3_000), 1))
        await Publisher(bus).publish_many([event for _, event in log])
        at = {seq: fold_events(workrefs.PROJECTION, log[:seq]) for seq in (1_000, 2_000, 2_500, 2_900)}
        await save_state(bus, timelinestart.PROJECTION, (await state_at_seq(bus, timelinestart.PROJECTION, 1_000)).state)
        writer = EntryWriter(bus)
        assert await writer.write(at[1_000]) > 0
        listings: list[int] = []
        listed = workrefentries.kept_snapshots

        async def counted(*args: Any) -> list[int]:
            listings.append(1)
            return await listed(*args)

        monkeypatch.setattr(workrefentries, "kept_snapshots", counted)
        assert await writer.write(at[2_500], relist=False) > 0
        assert listings == [], "a write between saves listed the snapshot bucket"
        assert (position := await workrefentries.read_position(bus)) == Position(last_seq=2_500, starts=(1_000,))
        # A save at 2,000 whose write comes after the one at 2,500: nothing older is written, the position stays.
        await save_state(bus, timelinestart.PROJECTION, (await state_at_seq(bus, timelinestart.PROJECTION, 2_000)).state)
        assert await writer.write(at[2_000]) == 0
        assert (await workrefentries.read_position(bus)) == position
        await writer.write(at[2_900], relist=False)  # lists again: a save came since
        assert listings == [1] and await workrefentries.read_position(bus) == Position(last_seq=2_900, starts=(1_000, 2_000))
        for work_id, subjects in at[2_900].refs.items():
            found = await lookup(bus, work_id)
            assert found is not None and workrefs.subjects_naming(found, work_id) == subjects
        for work in ("w-00000010", "w-00000150", "e-00000180", "w-00000185"):  # a timeline from that position
            assert (await read_timeline(bus, Selector(work=work)))[0] == await _whole(bus, Selector(work=work)), work


async def test_the_api_writes_the_entries_and_their_position_between_snapshot_saves(
        nats_url: str, eventually: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keeper, "REFS_EVERY_EVENTS", 5)
    log = api_fleet_log()
    async with running_api(nats_url, snapshot_every_events=1_000_000, snapshot_min_interval_s=0) as api:
        published = await api.publish(*log)
        await wait_caught_up(api.base, published[-1].seq)
        end = await last_sequence(api.bus)

        async def position_near_the_end() -> bool:
            data = await get_entry(api.bus, BUCKET, POSITION_KEY)
            return data is not None and msgspec.msgpack.decode(data, type=Position).last_seq > end - 5

        await eventually(position_near_the_end, message=f"the entries' position within 5 records of {end}")
        whole = fold_all_events(list(enumerate(log, 1))).workrefs
        for work_id, subjects in whole.refs.items():
            found = await lookup(api.bus, work_id)
            assert found is not None and set(workrefs.subjects_naming(found, work_id)) <= set(subjects)


async def test_the_api_stopped_while_it_writes_the_entries_ends_on_that_one_cancel(
        nats_url: str, eventually: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python 3.11's wait_for, under the entries' puts, returns the ack and drops a cancellation that
    # lands with it; the writer then waited for the next 500 records, and the API's TaskGroup on it.
    monkeypatch.setattr(keeper, "REFS_EVERY_EVENTS", 5)
    losing = LosingACancel(EntryWriter.write)
    monkeypatch.setattr(EntryWriter, "write", losing)
    async with provisioned_bus(nats_url, node_id="gpu-1") as bus:
        projections = keeper.ProjectionKeeper(bus, snapshot_every=1_000_000, recent=10)
        task = asyncio.ensure_future(projections.run())
        try:
            await eventually(lambda: projections.current.caught_up, message="the keeper caught up")
            await Publisher(bus).publish_many(api_fleet_log())
            assert await stopped_on_one_cancel(task, losing), "the keeper went on after its cancellation"
        finally:
            await stop_tasks([task], 10)
