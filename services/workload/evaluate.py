"""Evaluation: a candidate plays the current best and a random player; win rates and Elo differences.

python -m services.workload.evaluate --board hex8 --candidate cand.pth --best best.pth --games 20
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from services.workload import report
from services.workload.game import GameState, UnsupportedConfig, board_spec, legal_moves, new_game, play
from services.workload.mcts import choose, search
from services.workload.net import Evaluator, load_checkpoint, pick_device

Player = Callable[[GameState, np.random.Generator], int]


def random_player(state: GameState, rng: np.random.Generator) -> int:
    """Any legal move, uniformly."""
    return int(rng.choice(legal_moves(state)))


def model_player(checkpoint: Path, sims: int, device: torch.device) -> Player:
    """Greedy search guided by a checkpoint's net."""
    net, _ = load_checkpoint(checkpoint)
    evaluate = Evaluator(net, device)

    def move(state: GameState, rng: np.random.Generator) -> int:
        return choose(search(state, evaluate, sims), 0.0, rng)

    return move


def match(board: str, a: Player, b: Player, games: int, rng: np.random.Generator, opening: int = 2) -> dict[str, float]:
    """`a` against `b`, colours alternating, a few random opening moves so games differ."""
    wins = losses = draws = 0
    for g in range(games):
        state = new_game(board_spec(board))
        for _ in range(opening):
            state = play(state, random_player(state, rng))
        a_is = 1 if g % 2 == 0 else 2  # a plays first in even games (counting from after the opening)
        if opening % 2:
            a_is = 3 - a_is
        while not state.over:
            player = a if state.to_move == a_is else b
            state = play(state, player(state, rng))
        wins += state.winner == a_is
        losses += state.winner == 3 - a_is
        draws += state.winner == 0
    score = (wins + 0.5 * draws) / games
    return {"games": games, "wins": wins, "losses": losses, "draws": draws, "win_rate": round(score, 4),
            "elo_diff": round(elo_difference(score), 1)}


def elo_difference(score: float) -> float:
    """Elo difference implied by a score in [0, 1] (clipped so 0% and 100% stay finite)."""
    s = min(max(score, 0.01), 0.99)
    return -400.0 * math.log10(1.0 / s - 1.0)


def main(argv: list[str] | None = None) -> None:
    """Play the matches and report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--board", required=True)
    ap.add_argument("--num-players", type=int, default=2)
    ap.add_argument("--candidate", required=True)
    ap.add_argument("--best", default="none", help="current best checkpoint, or 'none'")
    ap.add_argument("--games", type=int, default=20)
    ap.add_argument("--sims", type=int, default=16)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        board_spec(args.board, args.num_players)
    except UnsupportedConfig as exc:
        report.fail(str(exc))
    if not Path(args.candidate).exists():
        report.fail(f"candidate checkpoint not found: {args.candidate}")
    torch.set_num_threads(1)
    started = time.monotonic()
    rng = np.random.default_rng(args.seed)
    device = pick_device(args.device)
    candidate = model_player(Path(args.candidate), args.sims, device)
    vs_random = match(args.board, candidate, random_player, args.games, rng)
    report.progress(0.5, f"vs random {vs_random['win_rate']:.0%}")
    best = Path(args.best) if args.best not in ("", "none") else None
    vs_best = match(args.board, candidate, model_player(best, args.sims, device), args.games, rng) if best and best.exists() else None
    report.result(kind="evaluation", board_type=args.board, num_players=args.num_players, candidate=args.candidate,
                  best=args.best, vs_random=vs_random, vs_best=vs_best, seconds=round(time.monotonic() - started, 3))


if __name__ == "__main__":
    main()
