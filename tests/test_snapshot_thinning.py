"""Kept snapshots are thinned with age: dense near the log's end, sparser further back, never farther than `reach` from a point."""

from __future__ import annotations

import bisect

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus import events as ev
from eventbus.publisher import Publisher
from eventbus.snapshots import kept_snapshots
from projections import models, snapshotthinning
from projections.snapshotplan import SnapshotSettings
from projections.snapshotthinning import DENSE, PER_DOUBLING, reach, thinned
from servicekit.snapshotting import load_state, save_state
from tests.bus_harness import provisioned_bus
from tests.test_forensics import CPU


def keep_every(every: int, saves: list[int]) -> list[int]:
    """The kept sequences after saving at each of `saves` (ascending) and thinning after each save, as `prune` does."""
    kept: list[int] = []
    for seq in saves:
        kept.append(seq)
        dropped = set(thinned(kept, every))
        kept = [s for s in kept if s not in dropped]
    return kept


def test_every_snapshot_of_the_dense_window_is_kept_and_older_ones_one_per_block_of_their_age() -> None:
    every = 10
    kept = list(range(every, 2000 * every + 1, every))
    dropped = thinned(kept, every)
    newest = kept[-1]
    assert not [s for s in dropped if newest - s < DENSE * every]  # the newest DENSE x N records: all
    assert 10 in set(kept) - set(dropped)  # the oldest is the oldest of its block: never thinned
    assert len(kept) - len(dropped) < DENSE + PER_DOUBLING * 12


def test_two_thousand_saves_keep_under_two_hundred_and_every_point_has_one_within_reach() -> None:
    every = 10_000  # a year at the API's cadence is ~2,200 saves
    kept = keep_every(every, list(range(every, 2000 * every + 1, every)))
    assert len(kept) < 200
    _assert_within_reach(kept, every, step=every // 3)


@settings(max_examples=60, deadline=None)
@given(every=st.integers(1, 50), gaps=st.lists(st.integers(1, 120), min_size=1, max_size=400))
def test_thinning_after_each_save_keeps_every_point_within_reach(every: int, gaps: list[int]) -> None:
    # Snapshots come every `every` records or sooner (a time rule may save after fewer).
    saves, seq = [], 0
    for gap in gaps:
        seq += min(gap, every)
        saves.append(seq)
    kept = keep_every(every, saves)
    assert kept[0] == saves[0] and kept[-1] == saves[-1]
    _assert_within_reach(kept, every, step=1)


def test_thinning_is_stable_a_later_pass_never_wants_back_what_an_earlier_dropped() -> None:
    every, saves = 3, list(range(3, 3 * 1000 + 1, 3))
    incremental = keep_every(every, saves)
    at_once = [s for s in saves if s not in set(thinned(saves, every))]
    assert set(at_once) <= set(incremental)


def _assert_within_reach(kept: list[int], every: int, step: int) -> None:
    newest = kept[-1]
    for point in range(kept[0], newest + 1, step):
        nearest = kept[bisect.bisect_right(kept, point) - 1]
        assert point - nearest <= reach(newest - point, every), (point, nearest, newest)


async def test_the_store_keeps_the_thinned_set_and_a_point_loads_the_newest_kept_before_it(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A narrower window and blocks, so that a few dozen saves reach the thinned ages.
    monkeypatch.setattr(snapshotthinning, "DENSE", 8)
    monkeypatch.setattr(snapshotthinning, "PER_DOUBLING", 2)
    every = 1
    snapshots = SnapshotSettings(every_events=every, every_s=3600.0, max_kept=1000)
    saves = list(range(1, 40))
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many([ev.HostOnline(node=f"gpu-{n}", roles=["selfplay"], version="0.1.0", resources=CPU)
                                           for n in saves])
        state = models.PROJECTION.initial()
        for seq in saves:
            await save_state(bus, models.PROJECTION, msgspec.structs.replace(state, last_seq=seq), settings=snapshots)
        kept = await kept_snapshots(bus, models.PROJECTION.name, models.PROJECTION.version)
        assert kept == keep_every(every, saves)
        assert len(kept) < len(saves) - 10 and kept[-8:] == saves[-8:]
        thinned_out = sorted(set(saves) - set(kept))
        point = thinned_out[len(thinned_out) // 2]
        loaded = await load_state(bus, models.PROJECTION, "test", not_after_seq=point)
        assert loaded is not None and loaded.header.last_seq == max(s for s in kept if s <= point)
