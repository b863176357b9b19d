"""The check sections share on their numbers at load: which settings must be above zero."""

from __future__ import annotations

from collections.abc import Mapping


def require_positive(section: object, *names: str, more: Mapping[str, float] | None = None) -> None:
    """Raise ValueError naming the first of the section's `names` (then of `more`) that is not > 0.

    Raised inside a Struct's `__post_init__`, msgspec reports it with the section's path, so the
    operator reads e.g. `sync.retry_max_s must be > 0, got 0`.
    """
    values = {name: getattr(section, name) for name in names} | dict(more or {})
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
