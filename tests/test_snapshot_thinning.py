"""Kept snapshots fit the bucket's byte budget: all kept under it, thinned with age over it, never farther than `reach` from a point."""

from __future__ import annotations

import bisect

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus import events as ev
from eventbus.publisher import Publisher
from eventbus.snapshots import kept_snapshots
from projections import models
from projections.snapshotplan import GIB, SnapshotSettings, allowance
from projections.snapshotthinning import DEFAULT, DENSE, LADDER, PER_DOUBLING, Density, fitting, reach, thinned, worst_fold
from servicekit.snapshotting import load_state, save_state
from tests.bus_harness import provisioned_bus
from tests.test_forensics import CPU


def keep_every(every: int, saves: list[int], density: Density = DEFAULT, start: int = 0) -> list[int]:
    """The kept sequences after saving at each of `saves` (ascending) and thinning after each save from the `start`th on, as `prune` does over its budget."""
    kept: list[int] = []
    for index, seq in enumerate(saves):
        kept.append(seq)
        dropped = set(thinned(kept, every, density)) if index >= start else set()
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


def test_the_sparsest_step_keeps_a_subset_of_every_denser_one() -> None:
    every, saves = 5, list(range(5, 5 * 3000 + 1, 5))
    kept = [set(saves) - set(thinned(saves, every, density)) for density in LADDER]
    assert all(sparser <= denser for denser, sparser in zip(kept, kept[1:], strict=False))
    assert [len(k) for k in kept] == sorted((len(k) for k in kept), reverse=True) and len(kept[0]) > len(kept[-1])


def test_every_snapshot_is_kept_while_they_fit_and_then_the_densest_step_that_fits() -> None:
    every = 10
    sizes = {seq: seq // every for seq in range(every, 1000 * every + 1, every)}  # a state grows with the log
    total = sum(sizes.values())
    assert fitting(sizes, every, total) == (None, [])
    density, dropped = fitting(sizes, every, total * 0.9)
    assert density is not None
    assert total - sum(sizes[s] for s in dropped) <= total * 0.9
    denser = LADDER[LADDER.index(density) - 1] if density != LADDER[0] else None
    if denser is not None:  # the step before it did not fit
        assert total - sum(sizes[s] for s in thinned(list(sizes), every, denser)) > total * 0.9
    assert fitting(sizes, every, 1) == (LADDER[-1], thinned(list(sizes), every, LADDER[-1]))


@settings(max_examples=60, deadline=None)
@given(every=st.integers(1, 20), count=st.integers(1, 600), step=st.integers(0, len(LADDER) - 1))
def test_worst_fold_is_within_each_steps_stated_reach(every: int, count: int, step: int) -> None:
    density = LADDER[step]
    saves = [every * (i + 1) for i in range(count)]
    kept = [s for s in saves if s not in set(thinned(saves, every, density))]
    assert worst_fold(kept, every) <= reach(kept[-1] - kept[0], every, density)
    assert worst_fold(saves, every) == every  # all kept: N records past one at most


def test_each_projection_keeps_its_share_of_an_exceeded_budget_and_all_of_a_budget_it_fits() -> None:
    budget = SnapshotSettings(max_gib=1.0)
    assert allowance(100, GIB, budget) == 100  # the bucket fits: nothing to thin
    assert allowance(GIB, 2 * GIB, budget) == GIB / 2  # half the bucket's bytes: half the budget
    assert allowance(GIB // 4, 4 * GIB, budget) == GIB / 16


async def test_under_the_budget_every_snapshot_is_kept_over_it_the_store_thins_and_a_point_loads_the_newest_before_it(
    nats_url: str,
) -> None:
    every, saves = 1, list(range(1, 40))
    state = models.PROJECTION.initial()
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many([ev.HostOnline(node=f"gpu-{n}", roles=["selfplay"], version="0.1.0", resources=CPU)
                                           for n in saves])
        roomy = SnapshotSettings(every_events=every, every_s=3600.0, max_kept=1000)
        for seq in saves[:20]:
            await save_state(bus, models.PROJECTION, msgspec.structs.replace(state, last_seq=seq), settings=roomy)
        assert await kept_snapshots(bus, models.PROJECTION.name, models.PROJECTION.version) == saves[:20]
        # A budget of a few bytes: nothing fits, so the sparsest step applies from the next save on.
        tight = msgspec.structs.replace(roomy, max_gib=1e-9)
        for seq in saves[20:]:
            await save_state(bus, models.PROJECTION, msgspec.structs.replace(state, last_seq=seq), settings=tight)
        kept = await kept_snapshots(bus, models.PROJECTION.name, models.PROJECTION.version)
        assert kept == keep_every(every, saves, LADDER[-1], start=20)
        assert kept[0] == saves[0] and kept[-LADDER[-1].dense:] == saves[-LADDER[-1].dense:] and len(kept) < 15
        thinned_out = sorted(set(saves) - set(kept))
        point = thinned_out[len(thinned_out) // 2]
        loaded = await load_state(bus, models.PROJECTION, "test", not_after_seq=point)
        assert loaded is not None and loaded.header.last_seq == max(s for s in kept if s <= point)


def test_max_kept_is_fitted_by_thinning_too() -> None:
    sizes = {seq: 1 for seq in range(1, 3001)}
    density, dropped = fitting(sizes, 1, budget=10**9, most=200)
    assert density is not None and len(sizes) - len(dropped) <= 200
    assert 1 not in dropped  # the oldest is the oldest of its block: thinning never drops it


async def test_past_max_kept_the_store_thins_instead_of_dropping_the_oldest(nats_url: str) -> None:
    saves = list(range(1, 41))
    state = models.PROJECTION.initial()
    capped = SnapshotSettings(every_events=1, every_s=3600.0, max_kept=12)
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many([ev.HostOnline(node=f"gpu-{n}", roles=["selfplay"], version="0.1.0", resources=CPU)
                                           for n in saves])
        for seq in saves:
            await save_state(bus, models.PROJECTION, msgspec.structs.replace(state, last_seq=seq), settings=capped)
        kept = await kept_snapshots(bus, models.PROJECTION.name, models.PROJECTION.version)
        assert len(kept) <= 12 and kept[0] == saves[0] and kept[-1] == saves[-1]
