"""When to try a failed step again, pure: exponential backoff per key on the monotonic clock."""

from __future__ import annotations

import msgspec


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Failures so far of one key and the earliest monotonic time to try it again."""

    failures: int = 0
    not_before: float = 0.0


def delay_s(failures: int, initial_s: float, max_s: float) -> float:
    """initial, 2x, 4x ... capped at max_s, for the 1st, 2nd, 3rd ... failure."""
    if failures <= 0:
        return 0.0
    return min(max_s, initial_s * 2.0 ** min(failures - 1, 32))


class RetryTable:
    """Backoff per key (a model id, a transfer id); forgotten on success."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial = initial_s
        self._max = max_s
        self._table: dict[str, Backoff] = {}

    def due(self, key: str, now: float) -> bool:
        """Whether the key may be tried now."""
        entry = self._table.get(key)
        return entry is None or now >= entry.not_before

    def failed(self, key: str, now: float, *, grow: bool = True) -> Backoff:
        """Record a failure; `grow=False` retries at the initial pace without counting it (waiting, not failing)."""
        entry = self._table.get(key, Backoff())
        failures = entry.failures + 1 if grow else max(entry.failures, 1)
        wait = delay_s(failures, self._initial, self._max) if grow else self._initial
        entry = Backoff(failures=failures, not_before=now + wait)
        self._table[key] = entry
        return entry

    def succeeded(self, key: str) -> None:
        """Forget the key's failures."""
        self._table.pop(key, None)

    def failures(self, key: str) -> int:
        """Failures recorded for the key."""
        entry = self._table.get(key)
        return entry.failures if entry else 0

    def next_due(self, now: float) -> float | None:
        """The earliest monotonic time after `now` a waiting key may be tried, None when none waits."""
        return min((e.not_before for e in self._table.values() if e.not_before > now), default=None)
