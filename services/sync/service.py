"""The `sync` service: one per node, carries out the data copies the leader plans from and to this node."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cluster.leadership.election import load_candidates
from config.nodedirs import sync_root
from servicekit.runtime import ServiceContext
from services.sync.agent import SyncAgent

log = logging.getLogger(__name__)


async def main(ctx: ServiceContext) -> None:
    """Upload and receive planned batches until stopped."""
    root = sync_root(ctx.config, dict(os.environ), Path.home())
    agent = SyncAgent(ctx.bus, ctx.publisher, ctx.node_id, root, ctx.config.sync, replicas=ctx.config.streams.replicas,
                      candidates=await load_candidates(ctx.config))
    log.info("sync %s: received batches in %s, bucket %s", ctx.node_id, root, ctx.config.sync.bucket)
    await agent.run(ctx.stopping)
    log.info("sync %s: stopped: %s", ctx.node_id, agent.statistics())
