"""When to take a projection's snapshot, which kept one to start from, and the byte budget's share: pure (what to delete: snapshotchains.py).

Snapshots are kept several per projection (eventbus/snapshots.py names them by version and
sequence) so that any point in the log's retention has one at most `every_events` before it,
and a projection's state outlives the events it was folded from once they age out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec


class SnapshotSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `snapshots:` config section: how often every folding service saves, and how many are kept."""

    every_events: Annotated[int, msgspec.Meta(ge=1)] = 50_000  # records folded since the last snapshot
    every_s: Annotated[float, msgspec.Meta(ge=1)] = 900.0  # or this long, if anything was folded
    # Per projection; past it the oldest go (a point in time before the oldest kept folds further).
    # 1000 x 50k events covers the default 730 days at the README's ~60k events a day (~44M).
    max_kept: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # The snapshot bucket's byte budget (deflated, every projection's together). Under it every
    # snapshot is kept and a point folds at most every_events records past one; over it each
    # projection thins its older ones to its share (projections/snapshotthinning.py). 4 GiB keeps
    # all of the API's bundle snapshots of a 2M-record log (~1.6 GB at one every 10k).
    max_gib: Annotated[float, msgspec.Meta(gt=0)] = 4.0
    # Between full snapshots, deltas (projections/snapshotdelta.py): each holds what changed since
    # the previous one, so every interval can be kept within the budget. A new full ("base") one
    # after `delta_links` deltas (a load reads its base and up to that many deltas) or once the
    # chain's bytes pass `delta_fraction` of its base's; a state under `delta_min_bytes` of msgpack
    # is always saved whole. 0 links: full snapshots only.
    delta_links: Annotated[int, msgspec.Meta(ge=0)] = 32
    delta_fraction: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    delta_min_bytes: Annotated[int, msgspec.Meta(ge=0)] = 1 << 20
    # Deltas only once the bucket holds this fraction of `max_gib`: below it full snapshots fit, and a
    # point loads one object (at 2M records with the default budget, --at was 2-3x slower from chains).
    delta_over: Annotated[float, msgspec.Meta(ge=0)] = 0.5


def due(folded_since: int, seconds_since: float, settings: SnapshotSettings) -> bool:
    """Whether a new snapshot is due: enough records folded, or some folded and enough time passed."""
    return folded_since >= settings.every_events or (folded_since > 0 and seconds_since >= settings.every_s)


GIB = 1 << 30


def allowance(own: int, bucket: int, settings: SnapshotSettings) -> float:
    """The bytes one projection's kept snapshots may take: all of them while the bucket fits the budget, else their share of it.

    `own`: that projection's kept bytes; `bucket`: every object's in the bucket (its own included).
    Each projection keeps the same fraction, so a small fold is not thinned for a large one's sake.
    """
    budget = settings.max_gib * GIB
    if bucket <= budget:
        return float(own)
    return own * budget / bucket


def newest_at_or_before(seqs: Sequence[int], bound: int) -> list[int]:
    """The kept sequences not after `bound`, newest first (the first usable one is the start)."""
    return sorted((s for s in seqs if s <= bound), reverse=True)
