"""Chains of delta snapshots: thinning and pruning never leave a delta without its base and links; pure rules."""

from __future__ import annotations

import bisect
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.snapshotchains import (
    capped,
    chain,
    delta_due,
    needed,
    orphans,
    plan_prune,
    stale,
    thinned,
    worst_fold,
)
from projections.snapshotplan import SnapshotSettings
from projections.snapshotthinning import LADDER, Density, block_width
from projections.snapshotthinning import thinned as thinned_full


def written(saves: list[int], links: int, restarts: frozenset[int] = frozenset()) -> dict[int, int]:
    """The points a writer leaves saving at each of `saves`: a base, then `links` deltas, then a base...; a base after a restart."""
    points: dict[int, int] = {}
    run = links  # forces a base first
    for index, seq in enumerate(saves):
        if run >= links or index in restarts or index == 0:
            points[seq], run = 0, 0
        else:
            points[seq], run = saves[index - 1], run + 1
    return points


def keep_every(points: dict[int, int], every: int, density: Density, span: int) -> dict[int, int]:
    """The points left after saving each in order and thinning after each save, as `prune` does over its budget."""
    kept: dict[int, int] = {}
    for seq in sorted(points):
        if points[seq] and points[seq] not in kept:
            continue  # its writer would have seen its previous point pruned and saved a base instead: not this layout
        kept[seq] = points[seq]
        for gone in thinned(kept, every, density, span):
            del kept[gone]
    return kept


def _loadable(points: dict[int, int]) -> None:
    for seq in points:
        links = chain(points, seq)
        assert links is not None and links[-1] == seq and points[links[0]] == 0, (seq, links)


def test_a_chain_runs_from_its_base_and_a_missing_link_breaks_it() -> None:
    points = {10: 0, 20: 10, 30: 20, 40: 0, 50: 40}
    assert chain(points, 30) == [10, 20, 30] and chain(points, 40) == [40] and chain(points, 50) == [40, 50]
    broken = {10: 0, 30: 20, 40: 0}
    assert chain(broken, 30) is None and orphans(points, [20]) == [30] and orphans(points, [40]) == [50]
    assert needed(points, [30, 50]) == {10, 20, 30, 40, 50}


def test_a_base_comes_first_then_deltas_until_the_links_or_the_bytes_run_out_and_a_small_state_is_always_whole() -> None:
    rule: dict[str, Any] = {"most_links": 4, "fraction": 0.5, "min_bytes": 1000}
    assert not delta_due(0, 0, 0, **rule)  # no base saved by this writer (a restart): a base
    assert delta_due(0, 0, 10_000, **rule) and delta_due(3, 4_000, 10_000, **rule)
    assert not delta_due(4, 100, 10_000, **rule) and not delta_due(1, 5_000, 10_000, **rule)
    assert not delta_due(0, 0, 999, **rule)


SAVES = st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=250)


@settings(max_examples=60, deadline=None)
@given(SAVES, st.integers(min_value=1, max_value=12), st.sampled_from(LADDER), st.frozensets(st.integers(0, 249), max_size=5))
def test_thinning_keeps_every_chain_whole_the_oldest_and_the_dense_window(gaps: list[int], links: int, density: Density,
                                                                          restarts: frozenset[int]) -> None:
    every = 7
    saves = list(_ascending(gaps))
    points = written(saves, links, restarts)
    kept = keep_every(points, every, density, span=links * every)
    _loadable(kept)
    newest = saves[-1]
    assert saves[0] in kept and newest in kept
    assert all(seq in kept for seq in saves if newest - seq < density.dense * every)
    at_once = {seq: prev for seq, prev in points.items() if seq not in set(thinned(points, every, density, links * every))}
    _loadable(at_once)
    assert set(at_once) <= set(kept)  # stable: an earlier pass never dropped what the rule keeps later


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=200, max_value=700), st.integers(min_value=1, max_value=30), st.sampled_from(LADDER))
def test_a_point_anywhere_folds_at_most_about_twice_its_ages_block_past_a_loadable_one(count: int, links: int,
                                                                                        density: Density) -> None:
    every = 1
    saves = list(range(1, count + 1))
    points = keep_every(written(saves, links), every, density, span=links * every)
    kept = sorted(points)
    newest = kept[-1]
    for point in range(kept[0], newest + 1):
        nearest = kept[bisect.bisect_right(kept, point) - 1]
        base = chain(dict(points), nearest)[0]  # type: ignore[index]
        width = block_width(newest - base, every, density)  # a chain's prefix is cut by its base's age
        assert point - nearest <= every + 2 * width + every, (point, nearest, width)


def test_with_full_snapshots_only_the_rule_is_the_one_without_chains() -> None:
    saves = list(range(3, 3 * 1500 + 1, 3))
    for density in LADDER:
        assert thinned(dict.fromkeys(saves, 0), 3, density, span=0) == thinned_full(saves, 3, density)


def test_old_chains_keep_a_shorter_prefix_and_then_only_their_base() -> None:
    every, links = 1, 20
    points = written(list(range(1, 3001)), links)
    kept = keep_every(points, every, LADDER[2], span=links * every)
    _loadable(kept)  # the dense window starts inside a chain: its earlier links stay
    old_base = min(seq for seq, prev in kept.items() if prev == 0 and seq > 100)
    young_base = max(seq for seq, prev in kept.items() if prev == 0 and 1200 - seq > LADDER[2].dense + 4 * links)
    in_chain = [len([s for s in kept if chain(kept, s) and chain(kept, s)[0] == base]) for base in (old_base, young_base)]  # type: ignore[index]
    assert in_chain[0] <= in_chain[1] < links + 1


def test_stale_points_go_but_the_newest_stale_one_and_its_chain_stay() -> None:
    points = {10: 0, 20: 10, 30: 20, 40: 0, 50: 40}
    assert stale(points, first_seq=41) == []  # 30 is the only account of 1..30: it and its chain stay
    assert stale(points, first_seq=42) == [10, 20, 30]  # 40 resumes at 41, the log's first record
    assert stale(points, first_seq=60) == [10, 20, 30]  # 50 is the newest before the log: it and its base stay


def test_past_max_kept_whole_old_chains_go_and_the_newest_stays() -> None:
    points = {10: 0, 20: 10, 30: 20, 40: 0, 50: 40, 60: 0}
    assert capped(points, 4) == [10, 20, 30]
    assert capped(points, 1) == [10, 20, 30, 40, 50]


@settings(max_examples=60, deadline=None)
@given(SAVES, st.integers(min_value=1, max_value=12), st.integers(min_value=1, max_value=400), st.integers(min_value=1, max_value=50))
def test_a_prune_plan_never_leaves_a_broken_chain_and_fits_the_budget_when_the_sparsest_step_can(
        gaps: list[int], links: int, budget: int, first_seq: int) -> None:
    saves = list(_ascending(gaps))
    points = written(saves, links)
    sizes = {seq: (20 if prev == 0 else 2) for seq, prev in points.items()}
    config = SnapshotSettings(every_events=7, max_gib=budget / (1 << 30), delta_links=links, max_kept=1000)
    plan = plan_prune(points, sizes, first_seq, 0, config)
    left = {seq: prev for seq, prev in points.items() if seq not in set(plan.dropped)}
    _loadable(left)
    assert saves[-1] in left
    sparsest = {s: p for s, p in points.items() if s not in set(thinned(points, 7, LADDER[-1], links * 7))}
    if sum(sizes[s] for s in sparsest) <= budget and first_seq <= 1:
        assert sum(sizes[s] for s in left) <= budget
    assert plan.worst == worst_fold(left, 7)


def test_a_delta_pruned_as_soon_as_saved_makes_its_writer_save_a_base_next() -> None:
    from servicekit.snapshotting import Pruning, _Chain

    config = SnapshotSettings(delta_links=3, delta_min_bytes=0, delta_over=0)
    tracker, state = _Chain(), msgspec.defstruct("S", [("last_seq", int)])
    assert tracker.previous(config) is None
    tracker.saved(state(last_seq=10), 100, delta=False, pruning=Pruning([], 0))
    assert tracker.previous(config) == state(last_seq=10)
    tracker.saved(state(last_seq=20), 5, delta=True, pruning=Pruning([20], 0))
    assert tracker.previous(config) is None


def test_full_snapshots_while_the_bucket_holds_under_delta_over_of_the_budget_then_deltas() -> None:
    from servicekit.snapshotting import Pruning, _Chain

    config = SnapshotSettings(delta_links=3, delta_min_bytes=0, max_gib=1.0)  # delta_over 0.5: deltas past 512 MiB
    tracker, state = _Chain(), msgspec.defstruct("S", [("last_seq", int)])
    tracker.saved(state(last_seq=10), 100, delta=False, pruning=Pruning([], (1 << 29) - 1))
    assert tracker.previous(config) is None
    tracker.saved(state(last_seq=20), 100, delta=False, pruning=Pruning([], 1 << 29))
    assert tracker.previous(config) == state(last_seq=20)


def _ascending(gaps: list[int]) -> list[int]:
    seq, out = 0, []
    for gap in gaps:
        seq += gap
        out.append(seq)
    return out
