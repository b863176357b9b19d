"""The `sync` service: one per node, carries out the data copies the leader plans from and to this node."""

from __future__ import annotations

import logging

from cluster.leadership.election import load_candidates
from servicekit.runtime import ServiceContext
from services.sync.agent import SyncAgent

log = logging.getLogger(__name__)


async def main(ctx: ServiceContext) -> None:
    """Upload and receive planned batches until stopped."""
    root = ctx.dirs.sync_dir
    agent = SyncAgent(ctx.bus, ctx.publisher, ctx.node_id, root, ctx.config.sync, replicas=ctx.config.streams.replicas,
                      candidates=await load_candidates(ctx.config))
    log.info("sync %s: received batches in %s, bucket %s", ctx.node_id, root, ctx.config.sync.bucket)
    await agent.run(ctx.stopping)
    log.info("sync %s: stopped: %s", ctx.node_id, agent.statistics())
