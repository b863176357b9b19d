"""Selfplay games/s of the reference workload on this machine, with its default settings (32 sims, hex8, 2 players).

ours:    `python -m workload.selfplay` as the worker runs it, end to end (interpreter and
         torch start-up, the games, the NPZ written and hashed): games / wall seconds.
ceiling: the same games played in this process by workload.selfplay.play_game (search
         only, nothing started or written): games / seconds. `ratio` = ours / ceiling.
Both with no model (uniform priors, as before the first promotion).

Net-guided (a freshly initialised policy/value net on CPU, as selfplay runs once a model exists),
old and new path alternating round by round in this process:
old:     selfplay.play_game, one game at a time, one leaf per net call (`net_games_per_s`);
new:     batched.play_games, `--parallel` games at once, their leaves in one net call per step
         (`batched_net_games_per_s`); `net_speedup` = new / old (goal >= 4).
`job_net_games_per_s` is the new path as the worker runs it: `python -m workload.selfplay
--model net.pth`, wall clock with start-up, NPZ and hash.
Run: python -m ops.bench.bench_selfplay [--games 200] [--rounds 3] [--board hex8] [--net-games 4] [--parallel 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ops.bench.common import emit, log
from workload.batched import game_rngs, play_games
from workload.game import board_spec
from workload.mcts import uniform_evaluator
from workload.net import BatchEvaluator, Evaluator, PolicyValueNet, save_checkpoint
from workload.selfplay import play_game

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SIMS = 32  # workload.selfplay's default


def subprocess_rate(board: str, games: int, out: Path, model: str = "none") -> tuple[float, int]:
    """(games/s, samples) of one `python -m workload.selfplay` run, wall clock."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "workload.selfplay", "--board", board, "--num-players", "2",
         "--num-games", str(games), "--model", model, "--out", str(out)],
        capture_output=True, text=True, check=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - started
    result = json.loads(done.stdout.strip().splitlines()[-1])["result"]
    return games / seconds, int(result["num_samples"])


def in_process_rate(board: str, games: int, evaluate: Any, seed: int) -> float:
    """Games/s of play_game alone in this process."""
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for _ in range(games):
        play_game(board, evaluate, DEFAULT_SIMS, rng)
    return games / (time.perf_counter() - started)


def batched_rate(board: str, games: int, evaluate: Any, seed: int) -> float:
    """Games/s of batched.play_games, all `games` at once, in this process."""
    started = time.perf_counter()
    play_games(board, evaluate, DEFAULT_SIMS, game_rngs(seed, games))
    return games / (time.perf_counter() - started)


def net_rounds(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Old and new net-guided paths, alternating which goes first; then the new path as a job."""
    net = PolicyValueNet(board_spec(args.board))
    old, new = [], []
    for r in range(args.rounds):
        for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
            if side == "old":
                old.append(in_process_rate(args.board, args.net_games, Evaluator(net, torch.device("cpu")), seed=r))
            else:
                new.append(batched_rate(args.board, args.parallel, BatchEvaluator(net, torch.device("cpu")), seed=r))
            log(f"round {r + 1}/{args.rounds} net {side}: {(old if side == 'old' else new)[-1]:.2f} games/s")
    save_checkpoint(net, tmp / "net.pth", {})
    job, _ = subprocess_rate(args.board, args.parallel, tmp / "job", model=str(tmp / "net.pth"))
    log(f"net-guided job (start-up included): {job:.2f} games/s")
    old_median, new_median = statistics.median(old), statistics.median(new)
    return {"net_games_per_s": round(old_median, 3), "batched_net_games_per_s": round(new_median, 3),
            "net_speedup": round(new_median / old_median, 2), "job_net_games_per_s": round(job, 3),
            "net_old_rounds": [round(x, 3) for x in old], "net_new_rounds": [round(x, 3) for x in new],
            "parallel": args.parallel, "goal_net_speedup": 4.0}


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate the two sides for some rounds, then the net-guided figure; one JSON line."""
    torch.set_num_threads(1)  # as the workload does
    ours: list[float] = []
    ceiling: list[float] = []
    samples = 0
    with tempfile.TemporaryDirectory(prefix="rr-bench-selfplay-") as tmp:
        for r in range(args.rounds):
            sides = [("ours", r), ("ceiling", r)] if r % 2 == 0 else [("ceiling", r), ("ours", r)]
            for side, _ in sides:
                if side == "ours":
                    rate, samples = subprocess_rate(args.board, args.games, Path(tmp) / f"r{r}")
                    ours.append(rate)
                else:
                    ceiling.append(in_process_rate(args.board, args.games, uniform_evaluator, seed=r))
                log(f"round {r + 1}/{args.rounds} {side}: {(ours if side == 'ours' else ceiling)[-1]:.2f} games/s")
        nets = net_rounds(args, Path(tmp))
    ours_median, ceiling_median = statistics.median(ours), statistics.median(ceiling)
    return {
        "bench": "selfplay", "board": args.board, "players": 2, "sims": DEFAULT_SIMS, "games_per_round": args.games,
        "games_per_s": round(ours_median, 2), "ceiling_games_per_s": round(ceiling_median, 2),
        "ratio": round(ours_median / ceiling_median, 3), "samples_per_game": round(samples / args.games, 1),
        # What running it as a job adds per run: interpreter, imports, NPZ write and hash.
        "fixed_cost_s": round(args.games / ours_median - args.games / ceiling_median, 2),
        **nets, "ours_rounds": [round(x, 2) for x in ours],
        "ceiling_rounds": [round(x, 2) for x in ceiling], "torch": torch.__version__, "cpus": os.cpu_count(),
    }


def parse_args() -> argparse.Namespace:
    """--games per round, --rounds, --board, --net-games."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", type=int, default=200, help="games per round (the scheduler's populator_games)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--board", default="hex8")
    parser.add_argument("--net-games", type=int, default=4, help="games per round of the old net-guided path")
    parser.add_argument("--parallel", type=int, default=64, help="games per round of the new path, all at once")
    return parser.parse_args()


if __name__ == "__main__":
    emit(main(parse_args()))
