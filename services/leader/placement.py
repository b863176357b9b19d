"""Placement, pure: which pending items no alive node can run, and why.

An item pinned to a node that is gone, or needing a capability no alive node has (training on a
CPU-only fleet), can wait forever. The leader marks it WORK_UNSCHEDULABLE with the missing node
or capability, so that it is shown with its reason and no longer counts as its config's pending
work (the populator feeds the config around it); WORK_SCHEDULABLE clears the mark when a node
that can run it is alive again. Supervision gives it up after `scheduler.unschedulable_fail_after_s`.
Busy nodes count as able: an item that waits for a free slot is not unschedulable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from config.sections.scheduler import SchedulerSettings
from services.leader.policy import NodeView, WorkView, config_key, why_not

NODES_NAMED = 5  # per reason, in a message; the rest are counted


def _named(nodes: Sequence[str]) -> str:
    shown = ", ".join(nodes[:NODES_NAMED])
    return shown + (f" (+{len(nodes) - NODES_NAMED} more)" if len(nodes) > NODES_NAMED else "")


def grouped_reasons(whys: Iterable[tuple[str, str]]) -> str:
    """'a, b: reason; c: other reason' from (node, reason) pairs, nodes sharing a reason named together."""
    groups: dict[str, list[str]] = {}
    for node, why in sorted(whys):
        groups.setdefault(why, []).append(node)
    return "; ".join(f"{_named(nodes)}: {why}" for why, nodes in groups.items())


def unschedulable_reason(item: WorkView, nodes: Sequence[NodeView], settings: SchedulerSettings) -> str | None:
    """Why no alive node in `nodes` can run `item`, busy or not; None when one can."""
    alive = [n for n in nodes if n.alive]
    if item.target_node is not None:
        target = next((n for n in alive if n.node == item.target_node), None)
        if target is None:
            return f"pinned to node {item.target_node}, which is not alive (alive: {_named(sorted(n.node for n in alive)) or 'none'})"
        why = why_not(target, item, settings)
        return None if why is None else f"pinned to node {item.target_node}, which cannot run it: {why}"
    whys = [(n.node, why_not(n, item, settings)) for n in alive]
    if any(why is None for _, why in whys):
        return None
    what = f"{item.work_type} on {config_key(item.board_type, item.num_players)}"
    return f"no alive node can run {what}: {grouped_reasons((n, w) for n, w in whys if w is not None)}"


def unschedulable(items: Iterable[WorkView], nodes: Sequence[NodeView], settings: SchedulerSettings) -> dict[str, str | None]:
    """Work id -> why no alive node can run it (None: one can), judged once per kind of item.

    With no node alive at all nothing is judged (an empty dict): that is an outage, which every
    item waits out, not something wrong with one item.
    """
    if not any(n.alive for n in nodes):
        return {}
    reasons: dict[tuple[str, str, int, str | None], str | None] = {}
    out: dict[str, str | None] = {}
    for item in items:
        kind = (item.work_type, item.board_type, item.num_players, item.target_node)
        if kind not in reasons:
            reasons[kind] = unschedulable_reason(item, nodes, settings)
        out[item.work_id] = reasons[kind]
    return out
