"""The leader-only sync planner loop: fold the data and the cluster, plan copies, publish them as decisions.

Run by the scheduler's leader as `sync_planner_loop(ctx, term)`. After publishing, it waits
until its own plans are folded back before planning again, so a plan is never made twice
from a state that does not show it yet.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cluster.leadership.term import NotLeader, Term
from config.hosts import HostsConfig
from config.hostsfile import LiveHosts
from config.sections.sync import SyncSettings
from eventbus.events import utcnow
from eventbus.tasks import raise_if_cancelled
from projections import cluster, data, taint
from projections.base import Folder
from projections.syncwork import SYNC_REQUESTS, SyncRequestsState, requested_copies
from servicekit.livefold import LiveFold, aggregate_subjects, read_subjects, taint_subjects
from servicekit.runtime import ServiceContext
from servicekit.taintoffloop import tainted_off_loop
from services.leader.synctargets import alive_nodes, ephemeral_nodes, training_targets
from services.leader.transfers import Fleet, plan_transfers

log = logging.getLogger(__name__)

FOLD_BACK_TIMEOUT_S = 10.0
# What the catch-up reads, one consumer per filter (servicekit/livefold.py); the benchmarks read the same.
# The work types its folds read (withdrawn batches stay put, `sync` items), not every progress report.
CATCHUP_SUBJECTS = (*aggregate_subjects("data", "host", "leader", "lease"),
                    *read_subjects("work", data.PROJECTION, cluster.PROJECTION, taint.PROJECTION, SYNC_REQUESTS), *taint_subjects())


async def sync_planner_loop(ctx: ServiceContext, term: Term) -> None:
    """Plan data copies every `sync.plan_interval_s` and on news, until the term ends (or is cancelled)."""
    settings: SyncSettings = ctx.config.sync
    data_fold, cluster_fold = Folder(data.PROJECTION), Folder(cluster.PROJECTION)
    taint_fold = Folder(taint.PROJECTION)  # quarantined batches are not copied
    requests_fold = Folder(SYNC_REQUESTS)  # `sync` work items: operators' copies, planned first
    folds: list[Folder[Any]] = [data_fold, cluster_fold, taint_fold, requests_fold]
    live = LiveFold(ctx.bus, folds, CATCHUP_SUBJECTS,
                    snapshots=ctx.config.snapshots, who="sync planner", replicas=ctx.config.streams.replicas)
    await live.start()  # retried while the bus is away: one error must not end the term
    hosts = LiveHosts(ctx.config.hosts_file, "sync planner")
    async with asyncio.TaskGroup() as tasks:
        follower = tasks.create_task(live.follow())
        try:
            while True:
                skip = frozenset((await tainted_off_loop(taint_fold.state)).batches)
                await plan_once(term, live, data_fold, cluster_fold, await hosts.read(), settings, skip, requests_fold.state)
                raise_if_cancelled()  # a stop that the round's publishes lost (Python 3.11's wait_for)
                await live.wait_changed(settings.plan_interval_s)
        except NotLeader as exc:
            log.info("sync planner: %s", exc)
        finally:
            follower.cancel()


async def plan_once(
    term: Term, live: LiveFold, data_fold: Folder[data.DataState], cluster_fold: Folder[cluster.ClusterState],
    hosts: HostsConfig | None, settings: SyncSettings, tainted: frozenset[str] = frozenset(),
    requests: SyncRequestsState | None = None,
) -> int:
    """Plan and publish one round; returns how many copies were planned."""
    state = cluster_fold.state
    fleet = Fleet(targets=training_targets(state, hosts, settings), alive=alive_nodes(state), ephemeral=ephemeral_nodes(hosts))
    requested = requested_copies(requests) if requests is not None else frozenset()
    plans = plan_transfers(data_fold.state, fleet, utcnow(), settings, tainted, requested)
    last_seq = 0
    for plan in plans:
        last_seq = (await term.publish(plan)).seq
        log.info("sync planner: %s %s -> %s (%s)", plan.transfer_id, plan.from_node, plan.to_node, plan.reason)
    if last_seq and not await live.wait_position(last_seq, FOLD_BACK_TIMEOUT_S):
        log.warning("sync planner: own plans not folded back within %.0fs", FOLD_BACK_TIMEOUT_S)
    return len(plans)
