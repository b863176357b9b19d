"""When a model's distribution is complete, pure: every alive node that needs models holds a verified copy.

A leader decision (MODEL_DISTRIBUTION_COMPLETE carries the epoch), not a "last node to finish"
rule: two nodes finishing at once would both see the other unfinished, or both announce.
"""

from __future__ import annotations

import datetime as dt

from eventbus.events import ModelDistributionComplete
from projections.cluster import ClusterState, NodeInfo
from projections.models import ModelsState

# Roles whose jobs load models; a node with only other roles (a coordinator) needs none.
MODEL_ROLES = frozenset({"selfplay", "cpu_selfplay", "nn_training", "training", "mixed", "evaluation"})


def needs_models(node: NodeInfo) -> bool:
    """Whether a node runs jobs that read models (a node that reported no roles does: laptop mode)."""
    return not node.roles or any(role in MODEL_ROLES for role in node.roles)


def waiting_for(models: ModelsState, cluster: ClusterState, model_id: str) -> list[str]:
    """The alive nodes that need the model and have not installed it."""
    model = models.models.get(model_id)
    holders = set(model.nodes) if model is not None else set()
    return sorted(n.node for n in cluster.nodes.values() if n.alive and needs_models(n) and n.node not in holders)


def completions(models: ModelsState, cluster: ClusterState, now: dt.datetime) -> list[ModelDistributionComplete]:
    """MODEL_DISTRIBUTION_COMPLETE for each config's promoted model that every alive node needing it now has."""
    done = []
    for _config, model_id in sorted(models.promoted.items()):
        model = models.models.get(model_id)
        if model is None or model.distribution_complete or not model.nodes:
            continue
        if waiting_for(models, cluster, model_id):
            continue
        promoted_at = model.promotion.at if model.promotion else None
        seconds = max(0.0, (now - promoted_at).total_seconds()) if promoted_at else 0.0
        done.append(ModelDistributionComplete(model_id=model_id, nodes=list(model.nodes), seconds=round(seconds, 3)))
    return done
