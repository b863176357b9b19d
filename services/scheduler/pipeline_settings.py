"""Pipeline settings (`pipeline:` in the rr config): when to train, how to evaluate, when to promote."""

from __future__ import annotations

import msgspec

from services.scheduler.backoff import Backoff


class PipelineSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of the selfplay -> training -> evaluation -> promotion loop the leader runs."""

    enabled: bool = True
    min_new_samples: int = 2000  # selfplay samples a config gathers before its next training item
    evaluation_games: int = 40  # games of an evaluation item (each opponent)
    promotion_threshold: float = 0.55  # a candidate's win rate against the current best to be promoted
    first_promotion_threshold: float = 0.6  # ... against random play, while the config has no best yet
    decide_every_s: float = 1.0  # how often the leader looks again (it also looks on every new event)
    # After a config's n-th training item in a row failed, its next one waits this backoff's delay(n).
    training_backoff: Backoff = Backoff(base_s=60.0, cap_s=3600.0)

    def __post_init__(self) -> None:
        if self.min_new_samples < 1 or self.evaluation_games < 1:
            raise ValueError("min_new_samples and evaluation_games must be >= 1")
        for name in ("promotion_threshold", "first_promotion_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")
        if not self.decide_every_s > 0:
            raise ValueError(f"decide_every_s must be > 0, got {self.decide_every_s}")
