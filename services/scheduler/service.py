"""The `scheduler` service: every candidate node campaigns for the `scheduler` lease; only the leader schedules.

Scheduling itself plugs in through LEADER_LOOPS: each loop `async def loop(ctx, term)` is
started when this node is elected and cancelled when it stops leading. A loop publishes its
decisions with `await term.publish(event)`, which stamps the term's epoch and refuses
(NotLeader) once the term may no longer act.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from eventbus.events import ConfigChanged
from services.leadership.election import Elector, load_candidacy
from services.leadership.settings import LeadershipSettings
from services.membership.monitor import membership_loop
from services.leadership.term import NotLeader, Term
from services.runtime import ServiceContext
from services.scheduler.loops import SCHEDULING_LOOPS
from services.configwatch.loop import config_watch_loop
from services.distributor.leader import distribution_loop
from services.sync.loop import sync_planner_loop

log = logging.getLogger(__name__)

ROLE = "scheduler"

LeaderLoop = Callable[[ServiceContext, Term], Coroutine[Any, Any, None]]

# The leader-only loops: membership, scheduling (assignment, pipeline, populator), model
# distribution bookkeeping, the data sync planner and the config watch (CONFIG_CHANGED). Each
# starts on election and is cancelled when the term ends.
LEADER_LOOPS: list[LeaderLoop] = [membership_loop, *SCHEDULING_LOOPS, distribution_loop, sync_planner_loop, config_watch_loop]


async def leader_tick_loop(ctx: ServiceContext, term: Term) -> None:
    """Publish a "leader-tick" decision every `leadership.tick_s`: who acts, under which epoch (for fencing tests)."""
    every = ctx.config.leadership.tick_s
    while True:
        try:
            await term.publish(ConfigChanged(name="leader-tick", path=f"{term.role}/{term.node}"))
        except NotLeader:
            return
        await asyncio.sleep(every)


def leader_loops(settings: LeadershipSettings) -> list[LeaderLoop]:
    """The loops a leader runs: LEADER_LOOPS, plus the tick loop when `leadership.tick_s` > 0."""
    loops = list(LEADER_LOOPS)
    if settings.tick_s > 0:
        loops.append(leader_tick_loop)
    return loops


async def run_leader_loops(ctx: ServiceContext, term: Term, loops: list[LeaderLoop]) -> None:
    """Run every leader loop for the term; one failing fails the term (and cancels the others)."""
    async with asyncio.TaskGroup() as tasks:
        for loop in loops:
            tasks.create_task(loop(ctx, term))


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
    loops = leader_loops(settings)

    async def lead(term: Term) -> None:
        await run_leader_loops(ctx, term, loops)

    await elector.run(lead, ctx.stopping)
