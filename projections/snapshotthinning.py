"""Which old kept snapshots to thin out so that the snapshot store fits its byte budget: pure.

A snapshot is the size of its fold at that point, so keeping one every N records from the log's
first on makes the store grow with the square of the log (the API's bundle every 10k records:
~1.3 GB deflated at 2M, ~150 GB at a year's 22M). While a projection's snapshots fit its share
of the budget (`snapshots.max_gib`) every one is kept, and a point anywhere folds at most N
records. Past it, the densest step of `LADDER` that fits is applied: it keeps every snapshot of
the newest `dense` x N records, and older ones sparser with age: a snapshot `a` records older
than the newest is kept when no older one lies in its block of `width(a)` records, the blocks
aligned on multiples of that width and `width(a)` the power of two times N at most
a / (2 x `per_doubling`). So a point `a` records back has a snapshot at most N + 2 x width(a)
(about N + a / `per_doubling`) records before it, and each doubling of age keeps about
`per_doubling` snapshots: the store grows with the log's length only logarithmically.

Stable as the log grows: a snapshot only ages into wider blocks, and a block of width 2w holds
the aligned block of width w that made it drop a snapshot, with the older one still in it, so a
snapshot thinned out is never one a later pass would have kept. The ladder's steps nest the same
way (a sparser step's blocks hold a denser one's), so a sparser step keeps a subset of a denser
one's: a step down thins further, a step up only keeps more of what is saved from then on.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple


class Density(NamedTuple):
    """One step of the thinning: every snapshot of the newest `dense` x N records, then about `per_doubling` per doubling of age."""

    dense: int
    per_doubling: int


# From the densest to the sparsest; the first whose survivors fit the budget is applied. The
# sparsest is applied even when it does not fit (a budget below ~log2(age / N) snapshots).
LADDER = (Density(100, 64), Density(100, 32), Density(100, 16), Density(50, 8), Density(25, 4), Density(10, 2),
          Density(4, 1))
DEFAULT = Density(100, 16)  # what every store was thinned to before the budget
DENSE, PER_DOUBLING = DEFAULT


def block_width(age: int, every: int, density: Density = DEFAULT) -> int:
    """The block width of a snapshot `age` records older than the newest: N in the dense window, then powers of two times N."""
    if age < density.dense * every:
        return every
    width = every
    while width * 2 * density.per_doubling <= age:
        width *= 2
    return width


def thinned(seqs: Sequence[int], every: int, density: Density = DEFAULT) -> list[int]:
    """The kept sequences (one projection, one version) the rule drops: past the dense window, with an older one in their block."""
    every = max(every, 1)
    ordered = sorted(seqs)
    newest = ordered[-1] if ordered else 0
    dropped = []
    for seq in ordered:
        age = newest - seq
        if age < density.dense * every:
            break
        width = block_width(age, every, density)
        if ordered[bisect.bisect_left(ordered, seq // width * width)] < seq:
            dropped.append(seq)
    return dropped


def fitting(sizes: Mapping[int, int], every: int, budget: float, most: int | None = None) -> tuple[Density | None, list[int]]:
    """The densest thinning whose survivors of `sizes` (seq -> bytes) fit `budget` bytes and `most` snapshots, and what it drops.

    None and nothing dropped when all of them fit; the sparsest step when none does.
    """
    return fitting_by(sizes, budget, most, lambda density: thinned(list(sizes), every, density))


def fitting_by(sizes: Mapping[int, int], budget: float, most: int | None,
               thin: Callable[[Density], list[int]]) -> tuple[Density | None, list[int]]:
    """What `fitting` gives with `thin(density)` saying what each ladder step drops (full snapshots, or chains)."""
    total = sum(sizes.values())
    count = len(sizes) if most is None else most

    def fits(dropped: Sequence[int]) -> bool:
        return total - sum(sizes[seq] for seq in dropped) <= budget and len(sizes) - len(dropped) <= count

    if fits([]):
        return None, []
    for density in LADDER:
        dropped = thin(density)
        if fits(dropped):
            return density, dropped
    return LADDER[-1], thin(LADDER[-1])


def reach(age: int, every: int, density: Density | None = DEFAULT) -> int:
    """At most how many records before a point `age` records older than the newest snapshot the nearest kept one is (None: all kept)."""
    if density is None or age < density.dense * every:
        return every
    return every + 2 * block_width(age, every, density)


def worst_fold(seqs: Sequence[int], every: int) -> int:
    """The most records a point at or after the oldest of the kept `seqs` folds past its snapshot (after the newest: up to N)."""
    ordered = sorted(seqs)
    gaps = [later - earlier - 1 for earlier, later in zip(ordered, ordered[1:], strict=False)]
    return max([every, *gaps])
