"""The leader process's cyclic collector, set for a process that holds a large folded state and allocates fast.

Under ops/bench/bench_scheduler.py (1000 nodes, a burst of 20k items) Python's collector ran a
full collection every ~1,300 assignments: each walks every tracked object the process holds (the
queue's maps, their items, the nodes), and together they cost a fifth of the leader's CPU per
assignment (161-167 -> 119-136 us with the collector set as here, alternating runs). The folds'
states hold no reference cycles (frozen Structs, tuples, tries), so reference counting frees
what they drop, and the collector is only needed for the asyncio and nats-py cycles around them:
  - after the catch-up, the state built from the log is moved out of the collector's reach
    (`gc.freeze`): no later collection walks it again;
  - the young generation is collected every LEADER_GEN0_THRESHOLD allocations instead of 700, so
    the older generations, whose collections walk everything younger than the freeze, come a
    seventieth as often. Young collections cost what they find, so their total work is the same.
Cyclic garbage still goes, only later; a frozen object that becomes cyclic garbage stays until
the term ends. Both settings last only while the assigner runs (`settled_while_assigning`): a
process that hosts other things after it (the tests' process, a node that loses the lease and
keeps its other services) gets its collector back as it was.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

LEADER_GEN0_THRESHOLD = 50_000  # the default is 700; 50,000 measured no full collection in a 20k-item burst


def settle_after_catch_up() -> None:
    """Freeze what the process holds now (the folded state) and make young collections rarer; idempotent."""
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 < LEADER_GEN0_THRESHOLD:
        gc.set_threshold(LEADER_GEN0_THRESHOLD, gen1, gen2)


@contextlib.contextmanager
def settled_while_assigning() -> Iterator[None]:
    """`settle_after_catch_up` for the block; then what was frozen goes back to the collector, and its thresholds too."""
    threshold = gc.get_threshold()
    settle_after_catch_up()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@contextlib.contextmanager
def counted() -> Iterator[list[int]]:
    """How many cyclic collections of each generation (young, middle, full) ran during the block, as it runs."""
    counts = [0, 0, 0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counts[info["generation"]] += 1

    gc.callbacks.append(count)
    try:
        yield counts
    finally:
        gc.callbacks.remove(count)
