"""Elo on one anchored scale, pure: random play at 0, ratings from games with intervals."""

from __future__ import annotations

import pytest

from workload.ratings import ZERO, Pairing, Rated, Result, fit, rate
from workload.sprt import expected_score


def test_an_even_score_against_a_rated_player_gives_its_rating() -> None:
    r = rate([Result(opponent=Rated(elo=400, interval=0), wins=20, losses=20)])
    assert r is not None and r.elo == pytest.approx(400, abs=0.5) and r.games == 40


def test_a_score_gives_the_elo_it_implies_and_more_games_narrow_the_interval() -> None:
    few = rate([Result(opponent=ZERO, wins=15, losses=5)])
    many = rate([Result(opponent=ZERO, wins=150, losses=50)])
    assert few is not None and many is not None
    # 75% is +191 Elo; the virtual draw pulls 20 games a little toward the opponent
    assert 150 < few.elo < 191 < many.elo + 5
    assert many.interval < few.interval / 2.5


def test_a_perfect_score_stays_finite_and_an_opponents_uncertainty_carries_over() -> None:
    perfect = rate([Result(opponent=ZERO, wins=40, losses=0)])
    assert perfect is not None and 400 < perfect.elo < 1200
    sure = rate([Result(opponent=Rated(elo=500, interval=0), wins=30, losses=10)])
    unsure = rate([Result(opponent=Rated(elo=500, interval=150), wins=30, losses=10)])
    assert sure is not None and unsure is not None
    assert unsure.elo == sure.elo and unsure.interval > sure.interval + 50


def test_no_games_no_rating() -> None:
    assert rate([]) is None and rate([Result(opponent=ZERO, wins=0, losses=0)]) is None


def test_a_round_robin_recovers_known_strengths() -> None:
    truth = {"a": 100.0, "b": 300.0, "c": 500.0}
    games = 400
    pairings = []
    for x, y in [("a", "b"), ("a", "c"), ("b", "c"), ("random", "a"), ("random", "b")]:
        rx = truth.get(x, 0.0)
        wins = round(games * expected_score(rx - truth[y]))
        pairings.append(Pairing(a=x, b=y, wins=wins, losses=games - wins))
    ratings = fit(pairings, {"random": ZERO})
    assert ratings["random"] == ZERO
    for name, elo in truth.items():
        assert ratings[name].elo == pytest.approx(elo, abs=25), (name, ratings[name])
        assert 0 < ratings[name].interval < 80
