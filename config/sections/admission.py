"""Admission settings (`admission:` in the rr config): which work requests POST /work/add and `rr work add` accept."""

from __future__ import annotations

from typing import Annotated

import msgspec

# The reference workload's configs (workload/game.py: BOARDS x SUPPORTED_PLAYERS).
REFERENCE_CONFIGS: tuple[str, ...] = ("hex8_2p", "square8_2p")


class AdmissionSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`admission:` in the rr config: what work requests are accepted."""

    # <board>_<players>p configs the workload plays; None: the reference workload's (hex8_2p, square8_2p).
    configs: tuple[str, ...] | None = None
    default_num_games: dict[str, Annotated[int, msgspec.Meta(ge=1)]] = {}  # work type -> count when a request gives none
    max_num_games: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    min_priority: int = -1000
    max_priority: int = 1000

    def __post_init__(self) -> None:
        if self.min_priority > self.max_priority:
            raise ValueError(f"min_priority ({self.min_priority}) must be <= max_priority ({self.max_priority})")
        for config in self.configs or ():
            board, _, players = config.rpartition("_")
            if not board or not players.endswith("p") or not players[:-1].isdigit():
                raise ValueError(f"configs: {config!r} is not <board>_<players>p, e.g. hex8_2p")
