"""Shrinking a failing fault schedule, pure: drop faults one at a time while the violation still reproduces.

The oracle is whatever reruns a schedule and says whether it still fails: the real one brings up a
fleet and runs the whole mix (minutes), a test's is a plain function. The loop never calls it more
than `max_runs` times and returns the shortest schedule seen to reproduce.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec

T = TypeVar("T")


class Shrunk(msgspec.Struct, frozen=True, kw_only=True):
    """The shortest reproducing schedule found, how many reruns it took, and whether it is minimal."""

    faults: tuple[object, ...]
    runs: int
    minimal: bool  # no single fault can be dropped (False: the run budget ended first)


def shrink(faults: Sequence[T], reproduces: Callable[[tuple[T, ...]], bool], max_runs: int = 20) -> Shrunk:
    """Greedy one-at-a-time removal to a fixed point: passes over the faults until a whole pass drops none."""
    current, runs = tuple(faults), 0
    while True:
        i, dropped = 0, False
        while i < len(current):
            if runs >= max_runs:
                return Shrunk(faults=current, runs=runs, minimal=False)
            candidate = current[:i] + current[i + 1:]
            runs += 1
            if reproduces(candidate):
                current, dropped = candidate, True  # the next fault moved to index i
            else:
                i += 1
        if not dropped:
            return Shrunk(faults=current, runs=runs, minimal=True)
