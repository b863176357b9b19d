"""Retiring settled entries from a fold by stream position, pure: which scheduled positions are due.

A fold that retires what has settled (completed work items, batches whose copies ended) keeps a
map from a stream position to what it scheduled there and a mark, `retired_through`, before
which nothing is scheduled any more. These two functions find what is due without looking at
every entry on every record: the mark runs ahead to just before the oldest scheduled position.
"""

from __future__ import annotations

from typing import Any

from projections.pmap import PMap


def oldest(scheduled: PMap[int, Any], after: int, seq: int) -> int:
    """The oldest position scheduled (all are after `after`, none after `seq`), or seq + 1 for none."""
    if not scheduled:
        return seq + 1
    # Entries retire oldest first, so the mark only moves forward: a fold looks at each position
    # about once. A gap longer than the map (a fold starting late) asks the map instead.
    has = scheduled.readers()[1]  # the trie's own `in` (a C call) when the map has no snapshot base
    for position in range(after + 1, min(seq, after + len(scheduled)) + 1):
        if has(position):
            return position
    return min(scheduled.keys())


def due(scheduled: PMap[int, Any], first: int, horizon: int) -> list[int]:
    """The scheduled positions up to `horizon`, oldest first; `first` is the oldest scheduled one."""
    if horizon - first >= len(scheduled):  # a long stride (a fold starting late): ask the map
        return sorted(position for position in scheduled.keys() if position <= horizon)
    has = scheduled.readers()[1]
    return [position for position in range(first, horizon + 1) if has(position)]
