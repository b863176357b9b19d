"""Read-only summaries of the work fold's state: what `rr status`, `rr work list`, the API's documents
and the dashboard count (the fold itself is projections/work.py)."""

from __future__ import annotations

from projections.work import ACTIVE, C, WorkState, WorkStatus


def by_node(state: WorkState) -> dict[str, dict[str, int]]:
    """Items holding each node now (assigned or running), by status."""
    out: dict[str, dict[str, int]] = {}
    for item in state.items.values():
        if item.status in ACTIVE and item.node is not None:
            per = out.setdefault(item.node, {})
            per[item.status.value] = per.get(item.status.value, 0) + 1
    return out


def by_config(state: WorkState) -> dict[str, dict[str, int]]:
    """Items of each config (board type x players), by status, retired ones included."""
    out: dict[str, dict[str, int]] = {}
    for item in state.items.values():
        per = out.setdefault(item.config, {})
        per[item.status.value] = per.get(item.status.value, 0) + 1
    for key, tally in state.retired_tally.items():
        per = out.setdefault(key.split(" ", 1)[1], {})
        per[C.value] = per.get(C.value, 0) + tally.count
    return out


def retired_count(state: WorkState) -> int:
    """Completed items no longer in `items` (`rr work show ID` reads one from its subjects)."""
    return len(state.retired)


def counts(state: WorkState) -> dict[str, int]:
    """Items in each status, every status listed (zeros included)."""
    return {s.value: state.counts.get(s.value, 0) for s in WorkStatus}
