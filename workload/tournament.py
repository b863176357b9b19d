"""Tournament: a round robin among models and the anchors, rated on the config's scale (random play = 0).

python -m workload.tournament --board hex8 --models gen3=/m/a.pth gen4=/m/b.pth --games 10 --sims 16

Each player is `id=checkpoint` (optionally `id=checkpoint@sims` for another search budget); the
anchors `random` (uniform legal moves, the scale's zero) and the pure-search anchor at `--sims`
(`--anchors random,search`, the default) join them. Every pair plays `--games` games, colours
alternating; the ratings are the maximum-likelihood fit of all the games with random play fixed
at 0 (workload/ratings.py), each with its 95% interval.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import msgspec
import numpy as np
import torch

from workload import report
from workload.evaluate import Player, model_player, play_one, random_player, search_player
from workload.game import UnsupportedConfig, board_spec
from workload.mcts import uniform_evaluator
from workload.net import device_or_fail
from workload.ratings import RANDOM, ZERO, Pairing, anchor_id, fit


def parse_player(text: str, sims: int) -> tuple[str, Path, int]:
    """`id=path[@sims]` -> (id, path, sims); raises ValueError naming the argument."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--models {text!r}: expected id=checkpoint or id=checkpoint@sims")
    path, at, budget = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if at and not budget.isdigit():
        raise ValueError(f"--models {text!r}: the search budget after @ must be a whole number")
    return name, Path(path), int(budget) if at else sims


def round_robin(board: str, players: dict[str, Player], games: int, rng: np.random.Generator) -> list[Pairing]:
    """Every pair of players, `games` games each with colours alternating: the results from the first's side."""
    out = []
    pairs = list(itertools.combinations(sorted(players), 2))
    for n, (a, b) in enumerate(pairs, 1):
        scores = [play_one(board, players[a], players[b], g % 2 == 0, rng) for g in range(games)]
        out.append(Pairing(a=a, b=b, wins=scores.count(1.0), losses=scores.count(0.0), draws=scores.count(0.5)))
        report.progress(n / len(pairs), f"{a} vs {b}: {out[-1].wins}-{out[-1].losses}-{out[-1].draws}")
    return out


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_config_arguments(ap)
    ap.add_argument("--models", nargs="*", default=[], help="players: id=checkpoint or id=checkpoint@sims")
    ap.add_argument("--best", default="none", help="the node's current best checkpoint, joined as a player, or 'none'")
    ap.add_argument("--best-id", default="best", help="the best model's id (the worker's {best_model_id})")
    ap.add_argument("--anchors", default="random,search", help="comma-separated: random, search, or none")
    ap.add_argument("--games", type=int, default=10, help="games per pair")
    ap.add_argument("--sims", type=int, default=16, help="simulations per move of every searching player")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Play the round robin and report the pairings and ratings."""
    args = _args(argv)
    try:
        board_spec(args.board, args.num_players)
        entries = [parse_player(text, args.sims) for text in args.models]
        if args.best not in ("", "none") and args.best_id not in {name for name, _, _ in entries}:
            entries.append((args.best_id, Path(args.best), args.sims))
    except (UnsupportedConfig, ValueError) as exc:
        report.fail(str(exc))
    anchors = {a.strip() for a in args.anchors.split(",") if a.strip() not in ("", "none")}
    if anchors - {"random", "search"} or args.games < 1:
        report.fail(f"--anchors must name random and/or search (or none), and --games be >= 1: {args.anchors!r}, {args.games}")
    missing = [str(path) for _, path, _ in entries if not path.exists()]
    if missing:
        report.fail(f"checkpoints not found: {', '.join(missing)}")
    torch.set_num_threads(1)
    started = time.monotonic()
    device = device_or_fail(args.device)
    players: dict[str, Player] = {name: model_player(path, sims, device) for name, path, sims in entries}
    if "random" in anchors:
        players[RANDOM] = random_player
    if "search" in anchors:
        players[anchor_id(args.board, args.num_players, args.sims)] = search_player(uniform_evaluator, args.sims)
    if len(players) < 2:
        report.fail("a tournament needs at least two players (models and anchors)")
    pairings = round_robin(args.board, players, args.games, np.random.default_rng(args.seed))
    ratings = fit(pairings, {RANDOM: ZERO}) if RANDOM in players else fit(pairings, {sorted(players)[0]: ZERO})
    report.result(kind="tournament", board_type=args.board, num_players=args.num_players, sims=args.sims,
                  players=sorted(players), pairings=[msgspec.to_builtins(p) for p in pairings],
                  ratings={name: msgspec.to_builtins(r) for name, r in sorted(ratings.items())},
                  anchored=RANDOM in players, seconds=round(time.monotonic() - started, 3))


if __name__ == "__main__":
    main()
