"""Retry pacing, pure: exponential, capped, and jittered so that many clients retrying after one fault spread out."""

from __future__ import annotations

import random

_RNG = random.Random()


def jittered_backoff(failures: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Delay before the retry that follows `failures` failures in a row: min(cap, base * 2**(n-1)), drawn in [half, all] of it."""
    ceiling = min(cap_s, base_s * 2.0 ** max(0, failures - 1))
    return ceiling * (0.5 + 0.5 * (rng or _RNG).random())
