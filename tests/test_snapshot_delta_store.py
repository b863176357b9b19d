"""Delta snapshots on a real server: a writer's chains load to the same state as a fold from scratch, a broken link
falls back to an older point, and a budget that thins keeps every chain whole."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from eventbus import events as ev
from eventbus.history import last_sequence, replay
from eventbus.objectdelete import delete_object
from eventbus.publisher import Publisher
from eventbus.snapshots import SNAPSHOT_BUCKET, delta_name, kept_index, kept_listing, save_snapshot
from projections import bundle
from projections.base import Folder, fold_records
from projections.snapshotchains import chain
from projections.snapshotplan import SnapshotSettings
from servicekit import snapshotting
from servicekit.rebuild import state_at_seq
from servicekit.snapshotting import SnapshotWriter, load_state
from tests.bus_harness import provisioned_bus
from tests.test_forensics import T0, _incident

EVERY = 3
DELTAS = SnapshotSettings(every_events=EVERY, every_s=3600.0, delta_links=3, delta_fraction=100.0, delta_min_bytes=0, delta_over=0)


def _log() -> list[ev.Event]:
    more = []
    for n in range(20):
        more += [ev.WorkAdded(work_id=f"x-{n}", work_type="selfplay", board_type="hex8", num_players=2, num_games=10),
                 ev.WorkAssigned(work_id=f"x-{n}", node="gpu-3", attempt=1, deadline=T0 + dt.timedelta(hours=1), epoch=9)]
        if n % 3 == 0:
            more.append(ev.WorkCancelled(work_id=f"x-{n - 1 if n else n}", reason="operator"))
    return [*_incident(), *more]


async def _write_every(bus: Any, settings: SnapshotSettings, *, restart_at: int = 0) -> int:
    """Fold the log as a service does, saving when due (a new writer from `restart_at` on: no chain in memory)."""
    folder = Folder(bundle.PROJECTION)
    writer = SnapshotWriter(bus, [folder], settings, "test")
    end = await last_sequence(bus)
    records: list[Any] = []
    await replay(bus, records.append, end_seq=end)
    for record in records:
        folder(record)
        if record.seq == restart_at:
            writer = SnapshotWriter(bus, [folder], settings, "test")
        if writer.folded():
            await writer.save_if_due()
    return end


async def _assert_every_point_is_a_scratch_fold(bus: Any, end: int) -> None:
    # The fold from scratch to each point is what a rebuild without snapshots gives (checked at the end), folded here
    # from one read of the log: a rebuild per point read the log again for each of them.
    records: list[Any] = []
    await replay(bus, records.append, end_seq=end)
    for seq in range(1, end + 1):
        scratch = fold_records(bundle.PROJECTION, records[:seq])
        point = await state_at_seq(bus, bundle.PROJECTION, seq)
        assert point.state == scratch, seq
    assert scratch == (await state_at_seq(bus, bundle.PROJECTION, end, use_snapshot=False)).state


async def test_a_writer_saves_a_base_then_deltas_and_every_point_loads_to_the_fold_from_scratch(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_log())
        end = await _write_every(bus, DELTAS, restart_at=31)
        index = await kept_index(bus)
        points = index.points((bundle.PROJECTION.name, bundle.PROJECTION.version))
        assert sorted(points) == list(range(EVERY, end + 1, EVERY))
        bases = [seq for seq, prev in points.items() if prev == 0]
        # A base, 3 deltas, a base...; the writer restarted at 31: a base first.
        assert bases == [3, 15, 27, *range(33, end + 1, 12)]
        assert all(points[seq] == seq - EVERY for seq in points if seq not in bases)
        loaded = await load_state(bus, bundle.PROJECTION, "test", not_after_seq=24)
        assert loaded is not None and loaded.header.last_seq == 24 and loaded.header.prev_seq == 21
        await _assert_every_point_is_a_scratch_fold(bus, end)


async def test_a_missing_or_unreadable_link_falls_back_to_an_older_point_never_a_wrong_state(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_log())
        end = await _write_every(bus, DELTAS)
        name, version = bundle.PROJECTION.name, bundle.PROJECTION.version
        await delete_object(bus, SNAPSHOT_BUCKET, delta_name(name, version, 21, 18))  # 24's chain: 15, 18, 21, 24
        await save_snapshot(bus, delta_name(name, version, 9, 6), b"not a delta")  # 12's chain: 3, 6, 9, 12
        point = await state_at_seq(bus, bundle.PROJECTION, 24)
        assert point.snapshot_seq == 18 and point.state == (await state_at_seq(bus, bundle.PROJECTION, 24, use_snapshot=False)).state
        point = await state_at_seq(bus, bundle.PROJECTION, 13)
        assert point.snapshot_seq == 6
        await save_snapshot(bus, f"{name}@v{version}.{15:012d}", b"not a base")
        point = await state_at_seq(bus, bundle.PROJECTION, 20)  # 15's chain has no base: the chain before it, to 12
        assert point.snapshot_seq == 6  # 9 unreadable, so 12 is unreachable too
        await _assert_every_point_is_a_scratch_fold(bus, end)


async def test_a_budget_that_thins_keeps_every_kept_delta_with_its_whole_chain(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_log())
        tight = SnapshotSettings(every_events=1, every_s=3600.0, delta_links=4, delta_fraction=100.0, delta_min_bytes=0,
                                 delta_over=0, max_gib=60_000 / (1 << 30))
        end = await _write_every(bus, tight)
        listing, bucket = await kept_listing(bus)
        assert bucket <= 60_000 * 1.2  # thinned to about the budget
        index = await kept_index(bus)
        points = index.points((bundle.PROJECTION.name, bundle.PROJECTION.version))
        assert len(points) < end and end in points and min(points) == 1
        assert any(prev for prev in points.values())  # deltas survive thinning, with their chains
        assert all(chain(points, seq) is not None for seq in points)
        assert len(listing) == len(points)
        await _assert_every_point_is_a_scratch_fold(bus, end)


async def test_a_writer_prunes_a_folder_and_its_parts_from_one_listing_of_the_bucket(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A listing reads every object's entry: one per saved projection made each of the API's saves O(objects kept) ten times.
    listings: list[int] = []

    async def counted(bus: Any) -> Any:
        listings.append(1)
        return await kept_listing(bus)

    monkeypatch.setattr(snapshotting, "kept_listing", counted)
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_log())
        folder = Folder(bundle.PROJECTION)
        end = await replay(bus, folder)
        writer = SnapshotWriter(bus, [folder], SnapshotSettings(every_events=1), "test", parts=bundle.saved_parts())
        assert writer.folded(end) and await writer.save_if_due()
        assert len(listings) == 1 and writer.saved == 1 + len(bundle.saved_parts())
        names = {kept.name for kept in (await kept_listing(bus))[0] if kept.seq == end}
        assert names == {bundle.PROJECTION.name, *(part.name for part, _ in bundle.saved_parts())}
