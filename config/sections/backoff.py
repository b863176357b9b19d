"""Backoff settings (`scheduler.retry_backoff`, `scheduler.populator_backoff`, `pipeline.training_backoff`).

Only the delays live here; what the leader does with them is services/leader/backoff.py.
"""

from __future__ import annotations

from typing import Annotated

import msgspec


class Backoff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exponential delays: `base_s` after the first failure, doubling, at most `cap_s`."""

    base_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    cap_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row (0 before any)."""
        if failures <= 0:
            return 0.0
        return min(self.cap_s, self.base_s * 2.0 ** min(failures - 1, 60))
