"""The promotion gate's sequential test: Wald's SPRT on game outcomes, as lczero and fishtest gate.

H0: the candidate is `elo0` Elo stronger than its opponent (or less); H1: it is `elo1` stronger (or
more). After each game the log-likelihood ratio of the outcomes is compared with Wald's bounds
log(beta / (1 - alpha)) and log((1 - beta) / alpha): crossing the upper accepts H1 (promote),
crossing the lower accepts H0 (reject); at `max_games` the test is cut off undecided, which is no
promotion. A draw counts as half a win and half a loss. Pure; the evaluation job stops its match
with it, and the scheduler recomputes the verdict from the counts in the log before promoting.
"""

from __future__ import annotations

import math

import msgspec

from config.sections.gate import SprtSettings

H1 = "H1"  # the candidate is at least elo1 stronger: promote
H0 = "H0"  # it is at most elo0 stronger: reject
UNDECIDED = "undecided"  # neither bound crossed yet
CUT_OFF = "max_games"  # max_games played with neither bound crossed: not promoted


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """Where the test stands after some games."""

    result: str  # H1, H0, undecided or max_games
    llr: float
    lower: float
    upper: float
    games: int

    @property
    def done(self) -> bool:
        """Whether the match may stop."""
        return self.result != UNDECIDED


def expected_score(elo: float) -> float:
    """The score (0..1) an Elo advantage implies."""
    return 1.0 / (1.0 + float(10.0 ** (-elo / 400.0)))


def llr(wins: float, losses: float, draws: float, settings: SprtSettings) -> float:
    """Log-likelihood ratio of H1 over H0 for these outcomes (draws as half a win and half a loss)."""
    s0, s1 = expected_score(settings.elo0), expected_score(settings.elo1)
    won, lost = wins + draws / 2, losses + draws / 2
    return won * math.log(s1 / s0) + lost * math.log((1 - s1) / (1 - s0))


def verdict(wins: int, losses: int, draws: int, settings: SprtSettings) -> Verdict:
    """The test's verdict on these outcomes."""
    lower = math.log(settings.beta / (1 - settings.alpha))
    upper = math.log((1 - settings.beta) / settings.alpha)
    value = llr(wins, losses, draws, settings)
    games = wins + losses + draws
    if value >= upper:
        result = H1
    elif value <= lower:
        result = H0
    elif games >= settings.max_games:
        result = CUT_OFF
    else:
        result = UNDECIDED
    return Verdict(result=result, llr=round(value, 4), lower=round(lower, 4), upper=round(upper, 4), games=games)


def run(outcomes: list[float], settings: SprtSettings) -> Verdict:
    """The verdict of a stream of scores (1 win, 0.5 draw, 0 loss), stopping where the test would."""
    wins = losses = draws = 0
    current = verdict(0, 0, 0, settings)
    for score in outcomes:
        wins += score == 1.0
        losses += score == 0.0
        draws += score == 0.5
        current = verdict(wins, losses, draws, settings)
        if current.done:
            break
    return current
