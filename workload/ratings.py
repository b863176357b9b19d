"""Elo on one anchored scale per config, pure: random play is 0, everything else is rated from games.

A player's rating is the maximum-likelihood Elo given its results against opponents whose ratings
are already known (random play at 0 exactly, the pure-search anchor and earlier generations with
their own intervals). One virtual draw against each opponent (BayesElo's prior) keeps a 100% score
finite. The 95% interval adds the opponents' own uncertainty, weighted by how much of the
information each match carried (delta method), so a long chain of generations does not look
more certain than its anchor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import msgspec

RANDOM = "random"  # the scale's zero: uniformly random legal moves
K = math.log(10) / 400  # Elo points to natural-log odds
Z95 = 1.959964


def anchor_id(board_type: str, num_players: int, sims: int) -> str:
    """The id of a config's pure-search anchor: the same PUCT with a uniform prior and no value, `sims` simulations."""
    return f"{board_type}_{num_players}p-search{sims}"


class Rated(msgspec.Struct, frozen=True, kw_only=True):
    """A rating: Elo on the config's scale and the half-width of its 95% interval."""

    elo: float
    interval: float
    games: int = 0


class Result(msgspec.Struct, frozen=True, kw_only=True):
    """A player's games against one opponent of known rating."""

    opponent: Rated
    wins: int
    losses: int
    draws: int = 0


ZERO = Rated(elo=0.0, interval=0.0)


def _p(diff: float) -> float:
    return 1.0 / (1.0 + math.exp(-K * diff))


def rate(results: Iterable[Result]) -> Rated | None:
    """The rating these results imply (None without games)."""
    rs = [r for r in results if r.wins + r.losses + r.draws > 0]
    if not rs:
        return None
    # Draws as half a win and half a loss; one virtual draw per opponent.
    won = [r.wins + r.draws / 2 + 0.5 for r in rs]
    played = [r.wins + r.losses + r.draws + 1.0 for r in rs]
    elo = sum(r.opponent.elo for r in rs) / len(rs)
    for _ in range(100):
        ps = [_p(elo - r.opponent.elo) for r in rs]
        grad = K * sum(w - n * p for w, n, p in zip(won, played, ps))
        info = K * K * sum(n * p * (1 - p) for n, p in zip(played, ps))
        step = max(-400.0, min(400.0, grad / info))
        elo += step
        if abs(step) < 1e-6:
            break
    infos = [K * K * n * p * (1 - p) for n, p in zip(played, (_p(elo - r.opponent.elo) for r in rs))]
    total = sum(infos)
    variance = 1.0 / total + sum((i / total) ** 2 * (r.opponent.interval / Z95) ** 2 for i, r in zip(infos, rs))
    return Rated(elo=round(elo, 1), interval=round(Z95 * math.sqrt(variance), 1),
                 games=sum(r.wins + r.losses + r.draws for r in rs))


class Pairing(msgspec.Struct, frozen=True, kw_only=True):
    """Games between two players of a round robin, from `a`'s side."""

    a: str
    b: str
    wins: int
    losses: int
    draws: int = 0


def fit(pairings: Iterable[Pairing], fixed: Mapping[str, Rated]) -> dict[str, Rated]:
    """Ratings of every player of a round robin; players in `fixed` (random play at least) keep theirs."""
    games = list(pairings)
    players = sorted({p.a for p in games} | {p.b for p in games})
    ratings: dict[str, Rated] = {name: fixed.get(name, ZERO) for name in players}
    free = [name for name in players if name not in fixed]
    for _ in range(200):  # Gauss-Seidel: each free player against the others' current ratings
        moved = 0.0
        for name in free:
            new = rate(_results_of(name, games, ratings, fixed))
            if new is not None:
                moved = max(moved, abs(new.elo - ratings[name].elo))
                ratings[name] = new
        if moved < 0.05:
            break
    return ratings


def _results_of(name: str, games: list[Pairing], ratings: Mapping[str, Rated], fixed: Mapping[str, Rated]) -> list[Result]:
    def opponent(other: str) -> Rated:
        # A free opponent's interval is being estimated in the same fit: counting it again at
        # every sweep would inflate every interval without bound; a fixed one's carries over.
        return ratings[other] if other in fixed else Rated(elo=ratings[other].elo, interval=0.0)

    out = []
    for g in games:
        if g.a == name:
            out.append(Result(opponent=opponent(g.b), wins=g.wins, losses=g.losses, draws=g.draws))
        elif g.b == name:
            out.append(Result(opponent=opponent(g.a), wins=g.losses, losses=g.wins, draws=g.draws))
    return out
