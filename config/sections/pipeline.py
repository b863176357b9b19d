"""Pipeline settings (`pipeline:` in the rr config): when to train, how to evaluate, when to promote."""

from __future__ import annotations

import msgspec

from config.sections.backoff import Backoff
from config.sections.gate import SprtSettings


class PipelineSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of the selfplay -> training -> evaluation -> promotion loop the leader runs."""

    enabled: bool = True
    min_new_samples: int = 2000  # selfplay samples a config gathers before its next training item
    evaluation_games: int = 40  # games of each rating match (against random play, the anchor)
    evaluation_sims: int = 16  # simulations per move of every searching player in evaluation: equal budgets
    # A candidate is promoted when the SPRT accepts that it is elo1 stronger than the config's best
    # (the pure-search anchor while it has none); see workload/sprt.py.
    gate: SprtSettings = msgspec.field(default_factory=SprtSettings)
    decide_every_s: float = 1.0  # how often the leader looks again (it also looks on every new event)
    # After a config's n-th training item in a row failed, its next one waits this backoff's delay(n).
    training_backoff: Backoff = Backoff(base_s=60.0, cap_s=3600.0)

    def __post_init__(self) -> None:
        if self.min_new_samples < 1 or self.evaluation_games < 1:
            raise ValueError("min_new_samples and evaluation_games must be >= 1")
        if self.evaluation_sims < 1:
            raise ValueError(f"evaluation_sims must be >= 1, got {self.evaluation_sims}")
        if not self.decide_every_s > 0:
            raise ValueError(f"decide_every_s must be > 0, got {self.decide_every_s}")
