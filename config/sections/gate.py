"""The promotion gate's settings (`pipeline.gate`): the SPRT's hypotheses, error rates and game cap.

The test itself is workload/sprt.py; the evaluation job gets these values on its command line.
"""

from __future__ import annotations

import msgspec


class SprtSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The gate's hypotheses (Elo of the candidate over its opponent), error rates and game cap."""

    elo0: float = 0.0
    elo1: float = 50.0
    alpha: float = 0.05  # chance of promoting a candidate that is no better than elo0
    beta: float = 0.05  # chance of rejecting one that is elo1 better
    max_games: int = 200

    def __post_init__(self) -> None:
        if not self.elo1 > self.elo0:
            raise ValueError(f"elo1 ({self.elo1}) must be greater than elo0 ({self.elo0})")
        for name in ("alpha", "beta"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise ValueError(f"{name} must be within 0..0.5 (exclusive), got {getattr(self, name)}")
        if self.max_games < 2:
            raise ValueError(f"max_games must be >= 2, got {self.max_games}")
