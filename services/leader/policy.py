"""Scheduling policy, pure: which node may run what, how configs are prioritised, what to assign now.

Config priority (higher runs first), for a config c = (board type, players):

    priority(c) = W_c * curriculum(c) + W_f * freshness(c) + W_e * velocity(c)

    curriculum(c) = weight of c in `scheduler.curriculum` divided by the largest weight (0..1; absent = 1.0)
    freshness(c)  = min(1, hours since c's newest selfplay batch / freshness_horizon_h); 1 if it has none
    velocity(c)   = clip(Elo gained per hour by c's promoted models / elo_velocity_ref, -1, 1)

An item's explicit `priority` outranks every config priority; ties go to the older item.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

import msgspec

from config.sections.scheduler import PriorityWeights, SchedulerSettings


class NodeView(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy needs to know about one node."""

    node: str
    alive: bool
    status: str = "ready"  # ready, disabled, maintenance (hosts file)
    roles: tuple[str, ...] = ("mixed",)
    vram_gb: float = 0.0  # 0 for a CPU-only node
    max_parallel_jobs: int = 1
    running: int = 0  # attempts assigned or running on it now
    configured: bool = True  # listed in the hosts file; unlisted nodes (laptop mode) take any work


class WorkView(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy needs to know about one pending work item."""

    work_id: str
    work_type: str
    board_type: str
    num_players: int
    priority: int | None = None
    target_node: str | None = None
    order: int = 0  # stream sequence of WORK_ADDED: older first


class ConfigSignals(msgspec.Struct, frozen=True, kw_only=True):
    """Observed facts about one config feeding its priority."""

    hours_since_newest_games: float | None = None  # None: no games yet
    elo_per_hour: float = 0.0


def config_key(board_type: str, num_players: int) -> str:
    """The seeds' config name, e.g. hex8_2p."""
    return f"{board_type}_{num_players}p"


def can_run(node: NodeView, item: WorkView, settings: SchedulerSettings) -> bool:
    """Whether `node` may take `item` at all (ignoring how busy it is)."""
    return why_not(node, item, settings) is None


def why_not(node: NodeView, item: WorkView, settings: SchedulerSettings) -> str | None:
    """Why `node` may not take `item` at all (ignoring how busy it is), or None when it may."""
    if not node.alive:
        return "offline"
    if node.status != "ready":
        return f"status {node.status} (hosts file)"
    if item.target_node is not None and item.target_node != node.node:
        return f"not the target {item.target_node}"
    if not node.configured:
        return None
    if not any(item.work_type in settings.role_work.get(role, ()) for role in node.roles):
        return f"roles {'/'.join(node.roles)} take no {item.work_type} (scheduler.role_work)"
    rules = list(_rules_for(item, settings))
    if not rules:
        return f"no scheduler.capabilities rule covers {item.work_type} on {item.board_type}"
    if any(_rule_admits(rule_min, cpu_ok, node) for rule_min, cpu_ok in rules):
        return None
    gpu_min = min((m for m, _ in rules), default=0.0)
    has = f"{node.vram_gb:g} GB GPU memory" if node.vram_gb > 0 else "no GPU"
    return f"needs a GPU with >= {gpu_min:g} GB memory (scheduler.capabilities), has {has}"


def _rules_for(item: WorkView, settings: SchedulerSettings) -> Iterable[tuple[float, bool]]:
    return ((r.min_vram_gb, r.cpu_ok) for r in settings.capabilities if r.covers(item.work_type, item.board_type))


def _rule_admits(min_vram_gb: float, cpu_ok: bool, node: NodeView) -> bool:
    return cpu_ok if node.vram_gb <= 0 else node.vram_gb >= min_vram_gb


def curriculum_term(key: str, curriculum: Mapping[str, float]) -> float:
    """The config's curriculum weight relative to the largest one (absent configs weigh 1.0)."""
    top = max([1.0, *curriculum.values()])
    return max(0.0, curriculum.get(key, 1.0)) / top


def freshness_term(hours_since_newest: float | None, horizon_h: float) -> float:
    """How stale the config's newest games are, 0 (just made) .. 1 (horizon or older, or none)."""
    if hours_since_newest is None:
        return 1.0
    return min(1.0, max(0.0, hours_since_newest) / horizon_h)


def velocity_term(elo_per_hour: float, reference: float) -> float:
    """Elo gained per hour relative to a reference speed, clipped to -1..1."""
    return max(-1.0, min(1.0, elo_per_hour / reference))


def config_priority(key: str, signals: ConfigSignals, curriculum: Mapping[str, float], w: PriorityWeights) -> float:
    """The priority formula of the module docstring."""
    return (
        w.curriculum * curriculum_term(key, curriculum)
        + w.freshness * freshness_term(signals.hours_since_newest_games, w.freshness_horizon_h)
        + w.elo_velocity * velocity_term(signals.elo_per_hour, w.elo_velocity_ref)
    )


def rank(items: Iterable[WorkView], signals: Mapping[str, ConfigSignals], settings: SchedulerSettings) -> list[WorkView]:
    """Pending items in the order they should get slots."""
    scores: dict[str, float] = {}  # per config: the formula once, not once per item

    def key(item: WorkView) -> tuple[int, float, int]:
        cfg = config_key(item.board_type, item.num_players)
        score = scores.get(cfg)
        if score is None:
            score = scores[cfg] = config_priority(cfg, signals.get(cfg, ConfigSignals()), settings.curriculum, settings.weights)
        explicit = item.priority if item.priority is not None else -(1 << 30)
        return (-explicit, -score, item.order)

    return sorted(items, key=key)


_Slot = tuple[float, float, str, int]  # (load ratio, -VRAM, node, load when pushed): a heap entry


def plan_assignments(
    pending: Iterable[WorkView], nodes: Iterable[NodeView], signals: Mapping[str, ConfigSignals],
    settings: SchedulerSettings,
) -> list[tuple[str, str]]:
    """(work_id, node) pairs to assign now: best-ranked items first, each to the least loaded node that may run it.

    Same plan as scanning every node for every item, in O(items log nodes): eligibility depends
    only on (work type, board, target), so each such kind keeps a heap of its nodes by load.
    """
    views = {n.node: n for n in nodes}
    load = {n.node: n.running for n in views.values()}
    free = sum(max(0, v.max_parallel_jobs - v.running) for v in views.values())
    heaps: dict[tuple[str, str, str | None], list[_Slot]] = {}
    plan: list[tuple[str, str]] = []
    for item in rank(pending, signals, settings):
        if free <= 0:
            break
        kind = (item.work_type, item.board_type, item.target_node)
        if kind not in heaps:
            heaps[kind] = [_slot(v, load[v.node]) for v in views.values()
                           if load[v.node] < v.max_parallel_jobs and can_run(v, item, settings)]
            heapq.heapify(heaps[kind])
        node = _least_loaded(heaps[kind], views, load)
        if node is None:
            continue
        load[node] += 1
        free -= 1
        plan.append((item.work_id, node))
        if load[node] < views[node].max_parallel_jobs:
            heapq.heappush(heaps[kind], _slot(views[node], load[node]))
    return plan


def _slot(view: NodeView, load: int) -> _Slot:
    return (load / view.max_parallel_jobs, -view.vram_gb, view.node, load)


def _least_loaded(heap: list[_Slot], views: Mapping[str, NodeView], load: Mapping[str, int]) -> str | None:
    """Pop the node with the lowest (ratio, -VRAM, name); entries made stale by other kinds' picks are refreshed.

    Loads only grow, so a stale entry sorts no later than the node's true entry: the first
    current entry popped is the true minimum.
    """
    while heap:
        _, _, node, seen = heapq.heappop(heap)
        if load[node] >= views[node].max_parallel_jobs:
            continue
        if load[node] != seen:
            heapq.heappush(heap, _slot(views[node], load[node]))
            continue
        return node
    return None
