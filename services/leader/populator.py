"""The populator: keeps idle capacity supplied with selfplay items, shared among configs by priority.

`top_up` is pure: given pending selfplay items per config, idle slots and config priorities it
says which items to add. The target backlog is `backlog_per_node` items per idle slot, never
more than `backlog_per_node` per alive node. Each new item goes to the config whose pending
count is lowest relative to its priority (weighted fair sharing), so the curriculum weights
become the mix of queued games. `populator_loop` is the leader's shell around it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping

import msgspec

from cluster.leadership.term import Term
from config.hosts import HostsConfig
from config.hostsfile import LiveHosts
from config.sections.scheduler import SchedulerSettings
from eventbus.events import Event, WorkAdded, utcnow
from projections import bundle
from projections.bundle import ProjectionSet
from projections.work import ACTIVE, WorkStatus
from servicekit.runtime import ServiceContext
from services.leader.backoff import failure_streaks, resting_configs
from services.leader.leaderfold import FoldingDecider
from services.leader.policy import ConfigSignals, config_priority

DEFAULT_CONFIGS = ("hex8_2p", "square8_2p")  # the reference game's boards
DECIDE_EVERY_S = 2.0


def parse_config(key: str) -> tuple[str, int]:
    """(board type, players) of a config name like hex8_2p."""
    board, _, players = key.rpartition("_")
    if not board or not players.endswith("p") or not players[:-1].isdigit():
        raise ValueError(f"config {key!r} is not <board>_<players>p, e.g. hex8_2p")
    return board, int(players[:-1])


def populated_configs(settings: SchedulerSettings) -> list[str]:
    """The configs the populator feeds: those of the curriculum, else the reference boards."""
    return sorted(settings.curriculum) if settings.curriculum else list(DEFAULT_CONFIGS)


def backlog_target(idle_slots: int, alive_nodes: int, settings: SchedulerSettings) -> int:
    """How many selfplay items should be pending now."""
    return max(0, min(idle_slots, alive_nodes) * settings.backlog_per_node) if idle_slots > 0 else 0


def top_up(
    pending: Mapping[str, int], idle_slots: int, priorities: Mapping[str, float], settings: SchedulerSettings,
    *, alive_nodes: int, id_prefix: str,
) -> list[WorkAdded]:
    """The selfplay items to add so the backlog reaches its target, spread over `priorities`' configs by weight."""
    if not settings.populator_enabled or not priorities or idle_slots <= 0:
        return []
    missing = backlog_target(idle_slots, alive_nodes, settings) - sum(pending.values())
    weights = {c: max(0.0, p) for c, p in priorities.items()}
    if not any(weights.values()):
        weights = {c: 1.0 for c in weights}
    counts = {c: pending.get(c, 0) for c in weights if weights[c] > 0}
    out: list[WorkAdded] = []
    for number in range(missing):
        config = min(counts, key=lambda c: ((counts[c] + 1) / weights[c], c))
        counts[config] += 1
        board, players = parse_config(config)
        out.append(WorkAdded(
            work_id=f"{id_prefix}-{number}-{config}", work_type="selfplay", board_type=board, num_players=players,
            num_games=settings.populator_games, requested_by="populator",
        ))
    return out


def config_priorities(state: ProjectionSet, configs: list[str], settings: SchedulerSettings, now: dt.datetime) -> dict[str, float]:
    """Each populated config's priority (policy.config_priority) from the log's data freshness."""
    out: dict[str, float] = {}
    for config in configs:
        data = state.data.configs.get(config)
        newest = data.newest_at if data else None
        hours = None if newest is None else (now - newest).total_seconds() / 3600.0
        signals = ConfigSignals(hours_since_newest_games=hours)
        out[config] = config_priority(config, signals, settings.curriculum, settings.weights)
    return out


class Capacity(msgspec.Struct, frozen=True, kw_only=True):
    """The selfplay capacity of the alive nodes."""

    alive_nodes: int
    idle_slots: int


def selfplay_capacity(state: ProjectionSet, hosts: HostsConfig, default_slots: int, settings: SchedulerSettings) -> Capacity:
    """Alive nodes that may run selfplay, and their slots not held by an assigned or running attempt."""
    busy: dict[str, int] = {}
    for item in state.work.items.values():
        if item.status in ACTIVE and item.node is not None:
            busy[item.node] = busy.get(item.node, 0) + 1
    nodes = idle = 0
    for node in state.cluster.nodes.values():
        entry = hosts.hosts.get(node.node)
        if not node.alive or (entry is not None and (entry.status != "ready" or not _takes_selfplay(entry.all_roles(), settings))):
            continue
        nodes += 1
        idle += max(0, (entry.max_parallel_jobs if entry else default_slots) - busy.get(node.node, 0))
    return Capacity(alive_nodes=nodes, idle_slots=idle)


def _takes_selfplay(roles: list[str], settings: SchedulerSettings) -> bool:
    return any("selfplay" in settings.role_work.get(role, ()) for role in roles)


def pending_selfplay(state: ProjectionSet) -> dict[str, int]:
    """Pending selfplay items per config that some alive node can run.

    An item marked unschedulable (pinned to a gone node, say) is not its config's backlog: were it
    counted, the config would get no new item while it waits.
    """
    out: dict[str, int] = {}
    for item in state.work.items.values():
        if item.work_type == "selfplay" and item.status is WorkStatus.PENDING and not item.unschedulable:
            out[item.config] = out.get(item.config, 0) + 1
    return out


def decide(state: ProjectionSet, hosts: HostsConfig, default_slots: int, settings: SchedulerSettings,
           now: dt.datetime, id_prefix: str) -> list[Event]:
    """The populator's decisions on a folded log."""
    capacity = selfplay_capacity(state, hosts, default_slots, settings)
    resting = resting_configs(failure_streaks(state.work.items.values(), retired=state.work.retired_tally), now, settings.populator_backoff)
    configs = [c for c in populated_configs(settings) if c not in resting]
    priorities = config_priorities(state, configs, settings, now)
    return list(top_up(pending_selfplay(state), capacity.idle_slots, priorities, settings,
                       alive_nodes=capacity.alive_nodes, id_prefix=id_prefix))


async def populator_loop(ctx: ServiceContext, term: Term) -> None:
    """The leader's populator: fold the log, add selfplay items where capacity idles, until the term ends."""
    settings: SchedulerSettings = ctx.config.scheduler
    if not settings.populator_enabled:
        return
    hosts = LiveHosts(ctx.config.hosts_file, "populator")
    await hosts.read()
    slots = settings.default_max_parallel_jobs

    def decide_now(state: ProjectionSet) -> list[Event]:
        prefix = f"selfplay-e{term.epoch}-s{state.last_seq}"  # unique: each decision moves the log on
        return decide(state, hosts.current or HostsConfig(), slots, settings, utcnow(), prefix)

    decider = FoldingDecider(
        "populator", ctx, term, ProjectionSet(), bundle.apply, bundle.PROJECTION.reads, decide_now, DECIDE_EVERY_S,
    )
    async with asyncio.TaskGroup() as tasks:
        reader = tasks.create_task(keep_reading(hosts, DECIDE_EVERY_S))  # a hosts-file edit applies within the term
        try:
            await decider.run()
        finally:
            reader.cancel()


async def keep_reading(hosts: LiveHosts, every_s: float) -> None:
    """Re-read the hosts file every `every_s` (only a changed file is parsed again)."""
    while True:
        await asyncio.sleep(every_s)
        await hosts.read()
