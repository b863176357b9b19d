"""Which old kept snapshots to thin out, so that the snapshot store grows with the log's length only logarithmically: pure.

A snapshot is the size of its fold at that point, so keeping one every N records from the log's
first on makes the store grow with the square of the log (the API's bundle every 10k records:
~11 GB at 2M). The rule keeps every snapshot of the newest `DENSE` x N records (so `rr replay`
there reads at most N records past one), and older ones sparser with age: a snapshot `a` records
older than the newest is kept when no older one lies in its block of `width(a)` records, the
blocks aligned on multiples of that width and `width(a)` the power of two times N at most a / `PER_DOUBLING`.
So a point `a` records back has a snapshot at most about N + 2a / `PER_DOUBLING` records before it,
and each doubling of age keeps about `PER_DOUBLING` snapshots.

Stable as the log grows: a snapshot only ages into wider blocks, and a block of width 2w holds
the aligned block of width w that made it drop a snapshot, with the older one still in it, so a
snapshot thinned out is never one a later pass would have kept.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

DENSE = 100  # every snapshot of the newest DENSE x N records is kept (1M records at the API's 10k)
PER_DOUBLING = 16  # past them, about this many per doubling of age


def block_width(age: int, every: int) -> int:
    """The block width of a snapshot `age` records older than the newest: N in the dense window, then powers of two times N."""
    if age < DENSE * every:
        return every
    width = every
    while width * 2 * PER_DOUBLING <= age:
        width *= 2
    return width


def thinned(seqs: Sequence[int], every: int) -> list[int]:
    """The kept sequences (one projection, one version) the rule drops: past the dense window, with an older one in their block."""
    every = max(every, 1)
    ordered = sorted(seqs)
    newest = ordered[-1] if ordered else 0
    dropped = []
    for seq in ordered:
        age = newest - seq
        if age < DENSE * every:
            break
        width = block_width(age, every)
        if ordered[bisect.bisect_left(ordered, seq // width * width)] < seq:
            dropped.append(seq)
    return dropped


def reach(age: int, every: int) -> int:
    """At most how many records before a point `age` records older than the newest snapshot the nearest kept one is."""
    return every if age < DENSE * every else every + 2 * block_width(age, every)
