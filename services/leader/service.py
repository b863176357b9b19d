"""The `leader` service (formerly `scheduler`): every candidate node campaigns for the `scheduler` lease; only the leader schedules.

Scheduling itself plugs in through LEADER_LOOPS: each loop `async def loop(ctx, term)` is
started when this node is elected and cancelled when it stops leading. A loop publishes its
decisions with `await term.publish(event)`, which stamps the term's epoch and refuses
(NotLeader) once the term may no longer act. The loops run under a LoopSupervisor
(cluster/leadership/supervisor.py): one that ends or fails is restarted inside the term, and a
term whose loops cannot run resigns; their health rides on the lease renewals.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from cluster.leadership.election import Elector, load_candidacy
from cluster.leadership.supervisor import LoopFn, LoopHealth, LoopSupervisor
from cluster.leadership.term import Term
from cluster.membership.monitor import membership_loop
from servicekit.configwatch.loop import config_watch_loop
from servicekit.runtime import ServiceContext
from services.leader.distribution import distribution_loop
from services.leader.loops import SCHEDULING_LOOPS
from services.leader.pipeline import pipeline_loop
from services.leader.populator import populator_loop
from services.leader.syncplan import sync_planner_loop

log = logging.getLogger(__name__)

ROLE = "scheduler"

LeaderLoop = Callable[[ServiceContext, Term], Coroutine[Any, Any, None]]

# The leader-only loops: membership, scheduling (assignment, pipeline, populator), model
# distribution bookkeeping, the data sync planner and the config watch (CONFIG_CHANGED). Each
# starts on election and is cancelled when the term ends.
LEADER_LOOPS: list[LeaderLoop] = [membership_loop, *SCHEDULING_LOOPS, distribution_loop, sync_planner_loop, config_watch_loop]


def loop_name(loop: LeaderLoop) -> str:
    """A loop's name for logs and health: its function's name without `_loop` ("assignment", "membership", ...)."""
    return loop.__name__.removesuffix("_loop")


def configured(ctx: ServiceContext, loops: list[LeaderLoop]) -> list[LeaderLoop]:
    """The loops with something to do under this config: a supervised loop that returns at once would only restart."""
    idle: set[LeaderLoop] = set()
    if not ctx.config.scheduler.populator_enabled:
        idle.add(populator_loop)
    if not ctx.config.pipeline.enabled:
        idle.add(pipeline_loop)
    if not (ctx.options.config_path or ctx.config.hosts_file):
        idle.add(config_watch_loop)
    return [loop for loop in loops if loop not in idle]


async def run_leader_loops(
    ctx: ServiceContext, term: Term, loops: list[LeaderLoop], on_health: Callable[[dict[str, LoopHealth]], None] | None = None
) -> None:
    """Run every leader loop for the term under a supervisor; raises LoopsCannotRun when the term should resign."""
    named: dict[str, LoopFn] = {loop_name(loop): functools.partial(loop, ctx, term) for loop in configured(ctx, loops)}
    await LoopSupervisor(named, term.may_act, on_health=on_health).run()


async def main(ctx: ServiceContext) -> None:
    """Campaign (if a candidate) and lead until stopped; a leader resigns on the way out."""
    settings = ctx.config.leadership
    candidacy = await load_candidacy(ctx.config, ctx.node_id)
    log.log(logging.INFO if candidacy.allowed else logging.WARNING, "%s: %s", ROLE, candidacy.describe())
    elector = Elector(
        ctx.bus,
        ROLE,
        ctx.node_id,
        settings=settings,
        publisher=ctx.publisher,
        candidate=candidacy.allowed,
        replicas=ctx.config.streams.replicas,
    )
    loops = LEADER_LOOPS

    async def lead(term: Term) -> None:
        await run_leader_loops(ctx, term, loops, on_health=elector.report_loops)

    await elector.run(lead, ctx.stopping)
