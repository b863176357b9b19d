"""Snapshots of every projection: kept several per projection, and what a service starts from after old events aged out."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import logging
import random
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.distribution.failures import FAILURES
from eventbus.history import first_sequence, last_sequence, replay
from eventbus.objects import put_stream, stat_object
from eventbus.publisher import Publisher
from eventbus.snapshots import (
    SNAPSHOT_BUCKET,
    delta_name,
    kept_name,
    kept_snapshots,
    load_snapshot,
    packed,
    parse_delta_name,
    parse_kept_name,
    parse_point,
    save_kept,
    save_snapshot,
    unpacked,
)
from eventbus.streams import StreamSettings
from projections import bundle, cluster, models, work
from projections.base import Folder
from projections.snapshot import encode_snapshot
from projections.snapshotchains import capped, stale
from projections.snapshotplan import SnapshotSettings, due, newest_at_or_before
from servicekit.livefold import LiveFold, aggregate_subjects
from servicekit.rebuild import state_at_seq, state_at_time
from servicekit.snapshotting import load_state, save_state
from tests.bus_harness import provisioned_bus
from tests.test_forensics import _incident
from tests.test_projections import LOGS

EVERY = SnapshotSettings(every_events=5, every_s=3600.0, max_kept=10)


def test_a_snapshot_is_due_after_enough_records_or_time_with_something_folded() -> None:
    assert not due(4, 10.0, EVERY)
    assert due(5, 0.0, EVERY)
    assert due(1, 3600.0, EVERY)
    assert not due(0, 99999.0, EVERY)


def test_the_start_is_the_newest_kept_snapshot_at_or_before_the_point() -> None:
    assert newest_at_or_before([10, 20, 30], 25) == [20, 10]
    assert newest_at_or_before([10, 20, 30], 5) == []


def test_kept_names_round_trip_and_other_objects_are_not_snapshots() -> None:
    assert parse_kept_name(kept_name("distributor-checkpoints", 3, 1234)) == ("distributor-checkpoints", 3, 1234)
    assert parse_kept_name("all") is None
    assert parse_kept_name("x@vA.12") is None
    delta = delta_name("all", 7, 20_000, 10_000)
    assert parse_kept_name(delta) is None  # a reader of full snapshots only does not list a delta
    assert parse_delta_name(delta) == parse_point(delta) == ("all", 7, 20_000, 10_000)
    assert parse_point(kept_name("all", 7, 10_000)) == ("all", 7, 10_000, 0) and parse_delta_name(kept_name("all", 7, 1)) is None


def test_pruning_drops_all_but_the_newest_snapshot_before_the_log_start() -> None:
    points = {10: 0, 20: 0, 30: 0, 40: 0}
    # The log now starts at 32: a snapshot at 31 or later resumes exactly; 30 is the best of the rest.
    assert stale(points, 32) == [10, 20]
    assert capped(points, 2) == [10, 20]
    assert stale({40: 0}, 1000) == []  # the only account of aged-out events stays


async def test_several_snapshots_are_kept_and_a_point_starts_from_the_newest_before_it(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        state = models.PROJECTION.initial()
        for seq in (3, 8, 15):
            await save_state(bus, models.PROJECTION, msgspec.structs.replace(state, last_seq=seq), settings=EVERY)
        assert await kept_snapshots(bus, models.PROJECTION.name, models.PROJECTION.version) == [3, 8, 15]
        loaded = await load_state(bus, models.PROJECTION, "test", not_after_seq=10)
        assert loaded is not None and loaded.header.last_seq == 8


async def test_a_fold_started_after_the_oldest_events_aged_out_has_the_state_it_had(
    nats_url: str, eventually: Callable[..., Any]
) -> None:
    # Events live 2 seconds here; the leader's live fold snapshots every 5 records meanwhile.
    short = StreamSettings(events_max_age_days=2 / 86400, duplicate_window_s=1.0)
    async with provisioned_bus(nats_url, settings=short) as bus:
        await Publisher(bus).publish_many(_incident())
        end = await last_sequence(bus)
        leader_folds = [Folder(models.PROJECTION), Folder(cluster.PROJECTION), Folder(FAILURES)]
        subjects = aggregate_subjects("model", "host", "leader")
        leader = LiveFold(bus, leader_folds, subjects, snapshots=EVERY, who="test leader")
        await leader.catch_up()
        before = [f.projection.finished(f.state) for f in leader_folds]
        assert before[0].promoted  # the incident promoted a model: the state that must survive
        follower = asyncio.ensure_future(leader.follow())
        try:
            await eventually(lambda: _all_kept(bus, leader_folds, end), timeout=20, message="leader snapshots saved")
        finally:
            follower.cancel()
        await eventually(lambda: _aged_out(bus, end), timeout=30, message="the incident's events aged out")

        fresh = [Folder(f.projection) for f in leader_folds]
        await LiveFold(bus, fresh, subjects).catch_up()
        assert [f.projection.finished(f.state) for f in fresh] == before

        from_scratch = Folder(models.PROJECTION)  # what every fold got before snapshots were kept: nothing left
        await replay(bus, from_scratch)
        assert not from_scratch.state.promoted


async def _all_kept(bus: Any, folds: list[Folder[Any]], end: int) -> bool:
    for folder in folds:
        seqs = await kept_snapshots(bus, folder.projection.name, folder.projection.version)
        if not seqs or seqs[-1] < end:
            return False
    return True


async def _aged_out(bus: Any, end: int) -> bool:
    return await first_sequence(bus) > end


async def test_a_bundle_part_starts_from_the_bundles_snapshot_when_it_has_none_of_its_own(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        end = await last_sequence(bus)
        folder = Folder(bundle.PROJECTION)
        await replay(bus, folder)
        await save_state(bus, bundle.PROJECTION, bundle.PROJECTION.finished(folder.state))
        loaded = await load_state(bus, work.PROJECTION, "test")
        assert loaded is not None and loaded.header.last_seq == end
        assert loaded.state == bundle.PROJECTION.finished(folder.state).work


@pytest.mark.parametrize("projection", [models.PROJECTION, FAILURES])
def test_start_from_refuses_a_fold_already_under_way(projection: Any) -> None:
    folder = Folder(projection)
    folder.start_from(projection.initial())
    folder.start_from(msgspec.structs.replace(projection.initial(), last_seq=0))
    with pytest.raises(RuntimeError):
        moved = Folder(projection, msgspec.structs.replace(projection.initial(), last_seq=3))
        moved.start_from(projection.initial())


async def test_a_point_in_time_view_equals_a_fold_from_scratch_at_random_points(nats_url: str) -> None:
    from tests.test_projections import _sample_log

    rng = random.Random(19)
    async with provisioned_bus(nats_url) as bus:
        log, published = _sample_log(60), []  # 241 events, stamped and stored in batches as a live log is
        for first in range(0, len(log), 20):
            published += await Publisher(bus).publish_many(log[first:first + 20])
        end = published[-1].seq
        for seq in sorted(rng.sample(range(1, end), 6)):  # what the API keeps, at irregular points
            await save_state(bus, bundle.PROJECTION, (await state_at_seq(bus, seq=seq, use_snapshot=False)).state)
        kept = await kept_snapshots(bus, bundle.PROJECTION.name, bundle.PROJECTION.version)
        for seq in [rng.randrange(1, end + 1) for _ in range(12)] + [end, 1]:
            fast = await state_at_seq(bus, seq=seq)
            assert fast.state == (await state_at_seq(bus, seq=seq, use_snapshot=False)).state, f"--seq {seq}"
            start = max((k for k in kept if k <= seq), default=0)
            assert (fast.snapshot_seq, fast.folded) == (start, seq - start), f"--seq {seq} read more than its tail"
        from_snapshot = 0
        for p in [published[rng.randrange(len(published))] for _ in range(12)]:
            at = p.event.ts
            assert at is not None
            fast_at = await state_at_time(bus, at, skew=dt.timedelta(0))
            slow_at = await state_at_time(bus, at, use_snapshot=False)
            assert fast_at.state == slow_at.state, f"--at {at} (seq {p.seq})"
            assert fast_at.folded < slow_at.folded or fast_at.snapshot_seq == 0
            from_snapshot += fast_at.snapshot_seq > 0
        assert from_snapshot >= 6  # most points lie after the first kept snapshot


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=LOGS, cuts=st.lists(st.floats(0, 1), max_size=4), points=st.lists(st.floats(0, 1), min_size=1, max_size=4))
def test_any_point_in_time_of_any_log_equals_a_fold_from_scratch(nats_url: str, log: list, cuts: list[float],
                                                                 points: list[float]) -> None:
    # Every example appends its log to the same stream and keeps its snapshots in the same bucket:
    # the property holds for any log, the ones before included.
    asyncio.run(_points_equal_scratch(nats_url, log, cuts, points))


async def _points_equal_scratch(url: str, log: list, cuts: list[float], points: list[float]) -> None:
    async with provisioned_bus(url) as bus:
        base = await last_sequence(bus)
        published = await Publisher(bus).publish_many(log) if log else []
        end = base + len(log)
        if end == 0:
            return

        def at(share: float) -> int:
            return max(1, base + round(share * len(log)))

        for seq in sorted({at(c) for c in cuts}):
            await save_state(bus, bundle.PROJECTION, (await state_at_seq(bus, seq=seq, use_snapshot=False)).state)
        kept = await kept_snapshots(bus, bundle.PROJECTION.name, bundle.PROJECTION.version)
        for seq in sorted({at(p) for p in points}):
            fast = await state_at_seq(bus, seq=seq)
            assert fast.state == (await state_at_seq(bus, seq=seq, use_snapshot=False)).state, f"--seq {seq}"
            start = max((k for k in kept if k <= seq), default=0)
            assert (fast.snapshot_seq, fast.folded) == (start, seq - start), f"--seq {seq} read more than its tail"
        for p in published[:: max(1, len(published) // 3)]:
            assert p.event.ts is not None
            fast_at = await state_at_time(bus, p.event.ts, skew=dt.timedelta(0))
            assert fast_at.state == (await state_at_time(bus, p.event.ts, use_snapshot=False)).state, f"--at seq {p.seq}"


async def test_a_snapshot_is_read_whole_in_many_chunks_and_a_missing_or_tampered_one_is_none(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        assert await load_snapshot(bus, "never-saved") is None  # no bucket yet
        data = random.Random(7).randbytes(3 * 1024 * 1024 + 17)  # several 128 KiB chunks and a short one
        await save_snapshot(bus, "big", data)
        assert await load_snapshot(bus, "big") == data
        assert await load_snapshot(bus, "other") is None
        stored = await stat_object(bus, SNAPSHOT_BUCKET, "big")
        assert stored is not None
        await bus.js.publish(f"$O.{SNAPSHOT_BUCKET}.C.{stored.nuid}", b"one chunk too many")
        assert await load_snapshot(bus, "big") is None  # its digest no longer matches: an older one is tried


def test_a_snapshot_is_stored_deflated_and_one_stored_before_as_it_is_still_reads() -> None:
    raw = encode_snapshot(models.PROJECTION, models.PROJECTION.initial(), dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert unpacked(packed(raw)) == raw and packed(raw) != raw
    assert unpacked(raw) == raw  # a msgpack map, saved before snapshots were deflated


async def test_a_kept_bundle_snapshot_takes_a_fraction_of_its_size_in_the_bucket_and_loads_whole(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        state = (await state_at_seq(bus, bundle.PROJECTION, use_snapshot=False)).state
        size = await save_state(bus, bundle.PROJECTION, state, settings=EVERY)
        stored = await stat_object(bus, SNAPSHOT_BUCKET, kept_name(bundle.PROJECTION.name, bundle.PROJECTION.version, state.last_seq))
        assert stored is not None and stored.size * 2 < size  # ~8x on a long log's bundle
        await put_stream(bus, SNAPSHOT_BUCKET, "before", io.BytesIO(b"\x81\xa1a\x01"), what="a snapshot saved before")
        assert await load_snapshot(bus, "before") == b"\x81\xa1a\x01"
        loaded = await load_state(bus, bundle.PROJECTION, "test")
        assert loaded is not None and loaded.state == state


async def test_snapshots_of_an_older_version_are_not_loaded_and_the_fold_says_it_rebuilds(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        old = dataclasses.replace(work.PROJECTION, version=work.PROJECTION.version - 1)
        await save_kept(bus, work.PROJECTION.name, old.version, 8, encode_snapshot(old, work.WorkState(last_seq=8)))
        with caplog.at_level(logging.INFO, logger="servicekit.snapshotting"):
            assert await load_state(bus, work.PROJECTION, "test") is None
        assert f"are of version {old.version}, this is version {work.PROJECTION.version}: folding it from the log" in caplog.text
        rebuilt = await state_at_seq(bus, work.PROJECTION)
        assert rebuilt.snapshot_seq == 0 and rebuilt.state.last_seq == len(_incident())
