"""Chains of delta snapshots: when to write a base, which kept points load, and thinning that never breaks a chain: pure.

A projection's kept points are bases (full snapshots) and deltas, each delta against the point
before it in its chain (projections/snapshotdelta.py). `points` maps each kept point's sequence
to the sequence its delta applies to, 0 for a base. A point loads when every link back to its
base is kept; thinning and pruning here only ever drop a chain's tail or a whole chain, and
`orphans` drops what a broken chain leaves, so a kept delta always has its base and every link.

Thinning with chains follows projections/snapshotthinning.py's ladder: every point of the newest
`dense` x N records is kept (and the links they need); further back a base is kept when no older
base lies in its aligned block of `width(age)` records, and of its deltas the first
`span - 2 x width` records' worth (`span`: a chain's planned length, `delta_links` x N), so the
gap from a chain's last kept delta to the next base is at most about 2 x width, the reach of the
ladder without deltas. Stable as the log grows: a width only grows with age, so a delta or base
dropped is never one a later pass would keep.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from projections.snapshotplan import SnapshotSettings, allowance
from projections.snapshotthinning import Density, block_width, fitting_by

Points = Mapping[int, int]  # kept point's seq -> the seq its delta applies to (0: a base)


def chain(points: Points, seq: int) -> list[int] | None:
    """The sequences to load for the point `seq`, its base first; None when a link is not kept."""
    links = [seq]
    while (prev := points.get(links[-1], -1)) > 0:
        if prev not in points or len(links) > len(points):
            return None
        links.append(prev)
    return links[::-1] if prev == 0 else None


def delta_due(links: int, chain_bytes: int, base_bytes: int, *, most_links: int, fraction: float, min_bytes: int) -> bool:
    """Whether the next snapshot is a delta: a base was saved by this writer, the chain is short and small enough.

    `links`: deltas after the base so far; `chain_bytes` their size and `base_bytes` the base's.
    A small state is always saved whole: a delta would save little and add a link that can break.
    """
    if base_bytes <= 0 or base_bytes < min_bytes:
        return False
    return links < most_links and chain_bytes < fraction * base_bytes


def bases(points: Points) -> dict[int, int]:
    """Each point's base, 0 where its chain is broken (one pass, oldest first: a delta comes after what it applies to)."""
    out: dict[int, int] = {}
    for seq in sorted(points):
        prev = points[seq]
        out[seq] = seq if prev == 0 else out.get(prev, 0) if prev < seq else 0
    return out


def orphans(points: Points, dropped: Iterable[int]) -> list[int]:
    """The kept points (not in `dropped`) whose chain is broken once `dropped` is gone: they must go too."""
    gone = set(dropped)
    left = {seq: prev for seq, prev in points.items() if seq not in gone}
    return sorted(seq for seq, base in bases(left).items() if not base)


def needed(points: Points, keep: Iterable[int]) -> set[int]:
    """`keep` and every link the points in it need to load."""
    out = set(keep) & set(points)
    for seq in sorted(out, reverse=True):
        prev = points[seq]
        while prev and prev not in out and prev in points:
            out.add(prev)
            prev = points[prev]
    return out


def thinned(points: Points, every: int, density: Density, span: int) -> list[int]:
    """The points the ladder step `density` drops (see the module's docstring), chains left whole up to what is kept."""
    every = max(every, 1)
    if not points:
        return []
    newest = max(points)
    base_of_point = bases(points)
    ordered_bases = sorted(seq for seq, prev in points.items() if prev == 0)
    keep = {seq for seq in points if newest - seq < density.dense * every}
    reach: dict[int, int | None] = {}  # base -> how far past it its deltas are kept (None: the whole chain goes)
    for seq, base in base_of_point.items():
        if not base or seq in keep:
            continue
        if base not in reach:
            width = block_width(newest - base, every, density)
            older = ordered_bases[bisect.bisect_left(ordered_bases, base // width * width)] < base
            reach[base] = None if older else span - 2 * width  # an older base in its block: the whole chain goes
        limit = reach[base]
        if limit is not None and (seq == base or seq - base <= limit):
            keep.add(seq)
    keep = needed(points, keep)
    return sorted(seq for seq in points if seq not in keep)


def fitting(points: Points, sizes: Mapping[int, int], every: int, span: int, budget: float,
            most: int | None = None) -> tuple[Density | None, list[int]]:
    """The densest ladder step whose kept points fit `budget` bytes and `most` points, and what it drops (None, []: all fit)."""
    return fitting_by(sizes, budget, most, lambda density: thinned(points, every, density, span))


def stale(points: Points, first_seq: int) -> list[int]:
    """Points no longer needed once the log starts at `first_seq`: every one before it but the newest and its chain.

    A point at s resumes with record s + 1, so those below `first_seq - 1` cannot be resumed exactly;
    the newest of them is kept all the same, as the only account of the aged-out records.
    """
    old = sorted(seq for seq in points if seq < first_seq - 1)
    if not old:
        return []
    keep = needed(points, [old[-1]]) if chain(points, old[-1]) else set()
    return [seq for seq in old if seq not in keep]


def capped(points: Points, most: int) -> list[int]:
    """The oldest points that go so that at most `most` are kept (whole chains, oldest first); the newest point stays."""
    ordered = sorted(points)
    dropped: set[int] = set()
    for seq in ordered[:-1]:
        if len(ordered) - len(dropped) <= most:
            break
        dropped.add(seq)
        dropped.update(orphans(points, dropped))
    return sorted(dropped)


def worst_fold(points: Points, every: int) -> int:
    """The most records a point at or after the oldest loadable one folds past it (after the newest: up to N)."""
    usable = sorted(seq for seq, base in bases(points).items() if base)
    gaps = [later - earlier - 1 for earlier, later in zip(usable, usable[1:], strict=False)]
    return max([every, *gaps])


class Pruned(NamedTuple):
    """What `plan_prune` drops, the ladder step it thinned to (None: none needed) and the worst fold left."""

    dropped: list[int]
    density: Density | None
    worst: int


def plan_prune(points: Points, sizes: Mapping[int, int], first_seq: int, other_bytes: int, settings: SnapshotSettings) -> Pruned:
    """The points of one projection and version to delete: stale ones, those thinning drops to fit the byte budget and
    `max_kept`, the oldest past the cap, and every point whose chain that breaks.

    `other_bytes`: the bucket's bytes that are not these points (other projections', other objects).
    """
    dropped = set(stale(points, first_seq))
    left = {seq: prev for seq, prev in points.items() if seq not in dropped}
    own = sum(sizes[seq] for seq in left)
    share = allowance(own, own + other_bytes, settings)
    span = settings.delta_links * settings.every_events
    density, thin = fitting(left, sizes, settings.every_events, span, share, settings.max_kept)
    dropped.update(thin)
    left = {seq: prev for seq, prev in points.items() if seq not in dropped}
    dropped.update(capped(left, settings.max_kept))
    dropped.update(orphans(points, dropped))
    left = {seq: prev for seq, prev in points.items() if seq not in dropped}
    return Pruned(sorted(dropped), density, worst_fold(left, settings.every_events))
