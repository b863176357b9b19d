"""Completed work items leaving the work fold's `items`: what is due, and what each keeps once retired, pure.

The work fold (projections/work.py) schedules each completed item at its completion's position
and calls `retire` when one is due; a retired item keeps only what judges a later event naming
it (its last attempt and node, packed in `WorkState.retired`) and a count in its work type's tally.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from projections import retiring
from projections.packedmap import added, packable

if TYPE_CHECKING:  # the fold's types; work.py imports this module
    from projections.work import WorkItem, WorkState

# A completed item leaves `items` this many records after its completion (about 20 hours of the
# fleet's ~60k events a day): the state, and every snapshot of it, then holds the open items and
# the recent ones, not every item ever added. What is kept of a retired item is what judges a
# later event naming it (its id, last attempt and node: the same rejection as before), and its
# tallies; `rr work show ID` reads its own subjects. Failed and cancelled items stay: a late
# completion or a stopped attempt's report can still change them.
RETIRE_AFTER = 50_000


class Retired(msgspec.Struct, frozen=True, array_like=True):
    """Completed items of one work type and config that left `items`: how many, and the newest one's completion."""

    count: int = 0
    last_seq: int = 0


def retire(state: WorkState, seq: int) -> WorkState:
    """`state` with the items completed `retire_after` records before `seq` or earlier moved out of `items`.

    `retired_through` runs ahead to just before the oldest completion still kept, so the state is
    only rebuilt when an item is due (or once per completion to move that mark), not on every record.
    """
    horizon = seq - state.retire_after
    if horizon <= state.retired_through:
        return state
    completions = state.completions
    oldest = retiring.oldest(completions, state.retired_through, seq)
    if oldest > horizon:
        return msgspec.structs.replace(state, retired_through=oldest - 1)
    due = retiring.due(completions, oldest, horizon)
    items, retired, tally = state.items, state.retired, state.retired_tally
    for done in due:
        work_id = completions[done]
        item = items[work_id]
        completions = completions.remove(done)
        judged_by = _judged_by(item)
        if not packable(work_id, judged_by):  # a separator in its id or node: it stays, as an open item would
            continue
        items, retired = items.remove(work_id), added(retired, work_id, judged_by)
        key = f"{item.work_type} {item.config}"
        tally = {**tally, key: Retired(count=tally.get(key, Retired()).count + 1, last_seq=item.updated_seq)}
    return msgspec.structs.replace(state, items=items, completions=completions, retired=retired, retired_tally=tally,
                                   retired_through=retiring.oldest(completions, horizon, seq) - 1)


def _judged_by(item: WorkItem) -> str:
    """What a retired item keeps: its last attempt and node, as `lookup` reads them back."""
    return str(item.attempt) if item.node is None else f"{item.attempt}\t{item.node}"
