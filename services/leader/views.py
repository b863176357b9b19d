"""The policy's inputs, pure: pending items as WorkViews, alive nodes as NodeViews (cluster projection + hosts file)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from config.hosts import HostsConfig
from config.sections.scheduler import SchedulerSettings
from projections.cluster import NodeInfo
from projections.pmap import PMap
from projections.work import ACTIVE, WorkItem
from services.leader.policy import NodeView, WorkView
from services.leader.supervision import assignable


def work_views(items: Iterable[WorkItem], settings: SchedulerSettings) -> list[WorkView]:
    """The items that may be assigned now."""
    return [
        WorkView(
            work_id=item.work_id, work_type=item.work_type, board_type=item.board_type, num_players=item.num_players,
            priority=item.priority, target_node=item.target_node,
            order=item.added_seq,
        )
        for item in items
        if assignable(item, settings)
    ]


def running_by_node(items: Iterable[WorkItem]) -> dict[str, int]:
    """Attempts holding each node (assigned or running)."""
    out: dict[str, int] = {}
    for item in items:
        if item.status in ACTIVE and item.node is not None:
            out[item.node] = out.get(item.node, 0) + 1
    return out


def node_views(
    nodes: Iterable[NodeInfo], hosts: HostsConfig | None, running: Mapping[str, int] | PMap[str, int], settings: SchedulerSettings
) -> list[NodeView]:
    """Alive nodes as the policy sees them; a node the hosts file does not list (or no hosts file) takes any work."""
    views = []
    for info in nodes:
        if not info.alive:
            continue
        entry = hosts.hosts.get(info.node) if hosts is not None else None
        if entry is None:
            views.append(NodeView(
                node=info.node, alive=True, configured=False, running=running.get(info.node, 0),
                max_parallel_jobs=settings.default_max_parallel_jobs,
            ))
            continue
        views.append(NodeView(
            node=info.node, alive=True, status=entry.status, roles=tuple(entry.all_roles()), vram_gb=entry.vram_gb(),
            max_parallel_jobs=entry.max_parallel_jobs, running=running.get(info.node, 0), configured=True,
        ))
    return views
