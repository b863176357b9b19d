"""The gate's sequential test on synthetic outcome streams: early on clear results, never on noise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config.sections.gate import SprtSettings
from workload.sprt import CUT_OFF, H0, H1, UNDECIDED, expected_score, run, verdict

GATE = SprtSettings()  # elo0 0, elo1 50, alpha = beta = 0.05, at most 200 games


def stream(elo: float, games: int, seed: int) -> list[float]:
    """Outcomes of a player `elo` stronger than its opponent (a tenth of the games drawn)."""
    rng = np.random.default_rng(seed)
    p_win = expected_score(elo) - 0.05
    u = rng.random(games)
    return [1.0 if x < p_win else (0.5 if x < p_win + 0.1 else 0.0) for x in u]


def test_a_clearly_stronger_player_is_accepted_early() -> None:
    lengths = []
    for seed in range(50):
        v = run(stream(300, 400, seed), GATE)
        assert v.result == H1, (seed, v)
        lengths.append(v.games)
    assert max(lengths) < 60 and float(np.median(lengths)) < 35


def test_a_clearly_weaker_player_is_rejected_early() -> None:
    for seed in range(50):
        v = run(stream(-300, 400, seed), GATE)
        assert v.result == H0 and v.games < 40, (seed, v)


def test_an_equal_player_is_almost_never_promoted() -> None:
    promoted = sum(run(stream(0, 400, seed), GATE).result == H1 for seed in range(300))
    assert promoted <= 0.05 * 300  # alpha


def test_a_player_at_elo1_is_promoted_with_power_1_minus_beta_when_the_cap_allows() -> None:
    uncapped = SprtSettings(max_games=5000)
    promoted = sum(run(stream(GATE.elo1, 5000, seed), uncapped).result == H1 for seed in range(200))
    assert promoted >= 0.88 * 200  # beta = 0.05, with sampling noise over 200 runs


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([1.0, 0.5, 0.0]), max_size=20))
def test_a_short_lucky_streak_decides_nothing_in_favour(outcomes: list[float]) -> None:
    # 20 games, even all won, never carry the test past its upper bound: noise does not promote.
    assert run(outcomes, GATE).result != H1


def test_verdicts_at_the_bounds_and_the_cut_off() -> None:
    assert verdict(0, 0, 0, GATE).result == UNDECIDED
    assert verdict(23, 0, 0, GATE).result == H1  # 23 * log(s1/s0) = 3.07 > log(19) = 2.94
    assert verdict(21, 0, 0, GATE).result == UNDECIDED
    assert verdict(0, 20, 0, GATE).result == H0
    assert verdict(0, 0, 200, GATE).result == CUT_OFF  # all drawn: no evidence either way, stopped at the cap
    assert verdict(0, 0, 200, GATE).llr == pytest.approx(100 * (np.log(expected_score(50) / 0.5) + np.log((1 - expected_score(50)) / 0.5)), abs=1e-3)


def test_bad_settings_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="elo1"):
        SprtSettings(elo0=10, elo1=5)
    with pytest.raises(ValueError, match="alpha"):
        SprtSettings(alpha=0.0)
    with pytest.raises(ValueError, match="max_games"):
        SprtSettings(max_games=1)
