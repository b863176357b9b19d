"""Evaluation: a candidate's gate match (SPRT, stopped early) and the matches that rate it on the config's scale.

python -m workload.evaluate --board hex8 --candidate cand.pth --best best.pth --games 20 --sims 16

The gate opponent is the current best at the same number of simulations or, with `--best none`,
the pure-search anchor (the same PUCT with a uniform prior and no learned value). The gate match
runs until the sequential test (workload/sprt.py) decides or `--max-games` is reached.
Rating matches have `--games` games each: the candidate against random play, against the anchor
(when the gate was against a best), and, with `--rate-anchor true`, the anchor against random play.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from config.sections.gate import SprtSettings
from workload import report
from workload.game import GameState, UnsupportedConfig, board_spec, legal_moves, new_game, play
from workload.mcts import EvaluateFn, choose, search, uniform_evaluator
from workload.net import Evaluator, device_or_fail, load_checkpoint
from workload.ratings import RANDOM, anchor_id
from workload.sprt import verdict

_DEFAULT_GATE = SprtSettings()
Player = Callable[[GameState, np.random.Generator], int]


def random_player(state: GameState, rng: np.random.Generator) -> int:
    """Any legal move, uniformly."""
    return int(rng.choice(legal_moves(state)))


def search_player(evaluate: EvaluateFn, sims: int) -> Player:
    """Greedy PUCT search with `evaluate` as prior and value (uniform_evaluator: the pure-search anchor)."""

    def move(state: GameState, rng: np.random.Generator) -> int:
        return choose(search(state, evaluate, sims), 0.0, rng)

    return move


def model_player(checkpoint: Path, sims: int, device: torch.device) -> Player:
    """Greedy search guided by a checkpoint's net."""
    net, _ = load_checkpoint(checkpoint)
    return search_player(Evaluator(net, device), sims)


def play_one(board: str, a: Player, b: Player, a_first: bool, rng: np.random.Generator, opening: int = 2) -> float:
    """One game after `opening` random moves; a's score (1 win, 0.5 draw, 0 loss)."""
    state = new_game(board_spec(board))
    for _ in range(opening):
        state = play(state, random_player(state, rng))
    a_is = (1 if a_first else 2) if opening % 2 == 0 else (2 if a_first else 1)
    while not state.over:
        player = a if state.to_move == a_is else b
        state = play(state, player(state, rng))
    return 0.5 if state.winner == 0 else float(state.winner == a_is)


def match(board: str, a: Player, b: Player, games: int, rng: np.random.Generator, opening: int = 2,
          gate: SprtSettings | None = None) -> dict[str, object]:
    """`a` against `b`, colours alternating; with `gate`, stops as soon as the sequential test decides."""
    wins = losses = draws = played = 0
    limit = gate.max_games if gate else games
    while played < limit:
        score = play_one(board, a, b, played % 2 == 0, rng, opening)
        played += 1
        wins, losses, draws = wins + (score == 1.0), losses + (score == 0.0), draws + (score == 0.5)
        if gate and verdict(wins, losses, draws, gate).done:
            break
    score = (wins + 0.5 * draws) / played
    out: dict[str, object] = {"games": played, "wins": wins, "losses": losses, "draws": draws,
                              "win_rate": round(score, 4), "elo_diff": round(elo_difference(score), 1)}
    if gate:
        v = verdict(wins, losses, draws, gate)
        out.update(gate=True, verdict=v.result, llr=v.llr)
    return out


def elo_difference(score: float) -> float:
    """Elo difference implied by a score in [0, 1] (clipped so 0% and 100% stay finite)."""
    s = min(max(score, 0.01), 0.99)
    return -400.0 * math.log10(1.0 / s - 1.0)


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_config_arguments(ap)
    ap.add_argument("--candidate", required=True)
    ap.add_argument("--best", default="none", help="current best checkpoint, or 'none' (the gate is the anchor)")
    ap.add_argument("--games", type=int, default=20, help="games of each rating match")
    ap.add_argument("--sims", type=int, default=16, help="simulations per move, the same for every searching player")
    ap.add_argument("--elo0", type=float, default=_DEFAULT_GATE.elo0)
    ap.add_argument("--elo1", type=float, default=_DEFAULT_GATE.elo1)
    ap.add_argument("--alpha", type=float, default=_DEFAULT_GATE.alpha)
    ap.add_argument("--beta", type=float, default=_DEFAULT_GATE.beta)
    ap.add_argument("--max-games", type=int, default=_DEFAULT_GATE.max_games, help="cap of the gate match")
    ap.add_argument("--rate-anchor", default="false", choices=["true", "false"], help="also play the anchor against random")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Play the gate and rating matches and report each."""
    args = _args(argv)
    try:
        board_spec(args.board, args.num_players)
        gate = SprtSettings(elo0=args.elo0, elo1=args.elo1, alpha=args.alpha, beta=args.beta, max_games=args.max_games)
    except (UnsupportedConfig, ValueError) as exc:
        report.fail(str(exc))
    if not Path(args.candidate).exists():
        report.fail(f"candidate checkpoint not found: {args.candidate}")
    torch.set_num_threads(1)
    started = time.monotonic()
    rng = np.random.default_rng(args.seed)
    device = device_or_fail(args.device)
    candidate = model_player(Path(args.candidate), args.sims, device)
    anchor = search_player(uniform_evaluator, args.sims)
    best = Path(args.best) if args.best not in ("", "none") and Path(args.best).exists() else None
    gate_opponent, gate_player = ("best", model_player(best, args.sims, device)) if best else ("anchor", anchor)
    matches = [{"player": "candidate", "opponent": gate_opponent,
                **match(args.board, candidate, gate_player, 0, rng, gate=gate)}]
    report.progress(0.5, f"gate vs {gate_opponent}: {matches[0]['verdict']} after {matches[0]['games']} games")
    matches.append({"player": "candidate", "opponent": RANDOM, **match(args.board, candidate, random_player, args.games, rng)})
    if best:
        matches.append({"player": "candidate", "opponent": "anchor", **match(args.board, candidate, anchor, args.games, rng)})
    if args.rate_anchor == "true":
        matches.append({"player": "anchor", "opponent": RANDOM, **match(args.board, anchor, random_player, args.games, rng)})
    report.result(kind="evaluation", board_type=args.board, num_players=args.num_players, candidate=args.candidate,
                  best=args.best, sims=args.sims, anchor=anchor_id(args.board, args.num_players, args.sims),
                  matches=matches,
                  seconds=round(time.monotonic() - started, 3))


if __name__ == "__main__":
    main()
