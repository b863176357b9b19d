"""The leader's rollback decisions, pure: a tainted promoted model gives way to the newest untainted one before it.

Re-promoting the older model (MODEL_PROMOTED, its own generation, the reason naming the
quarantine) is all it takes: every node's distributor installs whatever is promoted.
"""

from __future__ import annotations

from eventbus.events import ModelPromoted
from projections.models import ModelsState
from projections.taint import Tainted, rollbacks


def rollback_decisions(state: ModelsState, tainted: Tainted) -> list[ModelPromoted]:
    """One MODEL_PROMOTED per config whose best is tainted and that has an untainted model to return to."""
    decisions = []
    for _config, bad, good in rollbacks(state, tainted):
        model = state.models.get(good)
        if not good or model is None:
            continue  # nothing clean was ever promoted: the tainted best stays, `rr models` shows why
        decisions.append(ModelPromoted(
            model_id=good, board_type=model.board_type, num_players=model.num_players, sha256=model.sha256,
            size_bytes=model.size_bytes, generation=model.promotion.generation if model.promotion else 0,
            reason=f"rollback: {bad} is tainted: {tainted.models[bad].describe()}", previous_model=bad,
        ))
    return decisions
