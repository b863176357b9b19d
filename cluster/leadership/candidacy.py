"""Who may campaign for leadership, pure: the config's candidates, else the hosts file's voters, else everyone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

CandidacySource = Literal["leadership.candidates", "hosts p2p_voters", "everyone"]


class Candidacy(msgspec.Struct, frozen=True, kw_only=True):
    """Whether one node may campaign, and which list said so."""

    node: str
    allowed: bool
    source: CandidacySource
    candidates: tuple[str, ...] = ()  # empty when everyone may

    def describe(self) -> str:
        """One line for the log."""
        verdict = "a candidate" if self.allowed else "not a candidate (follows, never campaigns)"
        listed = f": {', '.join(self.candidates)}" if self.candidates else ""
        return f"node {self.node} is {verdict} per {self.source}{listed}"


def candidacy(node: str, configured: Sequence[str], voters: Sequence[str]) -> Candidacy:
    """The first non-empty list decides; with neither list every node may campaign."""
    if configured:
        return Candidacy(node=node, allowed=node in configured, source="leadership.candidates", candidates=tuple(configured))
    if voters:
        return Candidacy(node=node, allowed=node in voters, source="hosts p2p_voters", candidates=tuple(voters))
    return Candidacy(node=node, allowed=True, source="everyone")
