"""The `distributor` service: one per node, installs every config's promoted model from the object store.

See services/distributor/agent.py for what a pass does and services/distributor/duties.py
for the uploads; MODEL_DISTRIBUTION_COMPLETE is the leader's (services/leader/distribution.py).
"""

from __future__ import annotations

import logging

from cluster.leadership.election import load_candidates
from servicekit.runtime import ServiceContext
from services.distributor.agent import DistributorAgent

log = logging.getLogger(__name__)


async def main(ctx: ServiceContext) -> None:
    """Reconcile this node's models dir with the log until stopped."""
    root = ctx.dirs.models_dir
    agent = DistributorAgent(
        ctx.bus, ctx.publisher, ctx.node_id, root, ctx.config.distribution, replicas=ctx.config.streams.replicas,
        candidates=await load_candidates(ctx.config),
    )
    log.info("distributor %s: models in %s, bucket %s", ctx.node_id, root, ctx.config.distribution.bucket)
    await agent.run(ctx.stopping)
    log.info("distributor %s: stopped: %s", ctx.node_id, agent.statistics())
