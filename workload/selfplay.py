"""Selfplay: the current model plays itself; each position becomes a training sample (NPZ).

python -m workload.selfplay --board hex8 --num-players 2 --num-games 20 --model best.pth --out DIR

The games are played `--parallel` at a time by workload/batched.py, their leaves
evaluated in batches; interpreter and torch start-up are paid once per job. Without a model
(`--model none`, a config's first games) the search needs no net and torch is never imported.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from servicekit.filehash import sha256_file
from workload import report
from workload.batched import BatchEvaluateFn, game_rngs, play_games, uniform_batch
from workload.game import UnsupportedConfig, board_spec, encode, new_game, play
from workload.mcts import EvaluateFn, choose, search


def play_game(spec_name: str, evaluate: EvaluateFn, sims: int, rng: np.random.Generator,
              explore_moves: int = 8) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """One selfplay game, one leaf at a time (the path before batching; benchmarks compare against it)."""
    state = new_game(board_spec(spec_name))
    planes, policies, movers = [], [], []
    while not state.over:
        counts = search(state, evaluate, sims, rng=rng, noise=0.25)
        planes.append(encode(state))
        policies.append(counts / counts.sum())
        movers.append(state.to_move)
        state = play(state, choose(counts, 1.0 if state.moves < explore_moves else 0.0, rng))
    values = [0.0 if state.winner == 0 else (1.0 if m == state.winner else -1.0) for m in movers]
    return planes, policies, values


def play_all(board: str, evaluate: BatchEvaluateFn, sims: int, games: int, parallel: int,
             seed: int | None) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """`games` selfplay games, `parallel` at a time, reporting progress per finished game; samples in game order."""
    rngs = game_rngs(seed, games)
    planes: list[np.ndarray] = []
    policies: list[np.ndarray] = []
    values: list[float] = []
    waves = -(-games // parallel)
    size = -(-games // waves)  # equal waves (200 at 64 -> 4 x 50, not 64, 64, 64, 8): every batch stays full
    for start in range(0, games, size):
        def done(n: int, start: int = start) -> None:
            report.progress((start + n) / games, f"{start + n}/{games} games")

        for p, pi, v in play_games(board, evaluate, sims, rngs[start:start + size], on_done=done):
            planes += p
            policies += pi
            values += v
    return planes, policies, values


def net_evaluator(model: Path, device: str) -> BatchEvaluateFn:
    """The checkpoint's net as the search's batch evaluator."""
    # torch is imported here, not at the top: it costs seconds of CPU a job (more on a busy node), and a
    # config's first selfplay, searching without a net, has no use for it.
    import torch

    from workload.net import BatchEvaluator, device_or_fail, load_checkpoint

    torch.set_num_threads(1)
    net, _ = load_checkpoint(model)
    return BatchEvaluator(net, device_or_fail(device))


def main(argv: list[str] | None = None) -> None:
    """Play games and write one NPZ batch."""
    ap = argparse.ArgumentParser(description=__doc__)
    report.add_config_arguments(ap)
    ap.add_argument("--num-games", type=int, required=True)
    ap.add_argument("--model", default="none", help="checkpoint path, or 'none' for search without a net")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--sims", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=64, help="games played at once (their leaves batched through the net)")
    args = ap.parse_args(argv)
    if args.num_games < 1 or args.parallel < 1:
        report.fail(f"--num-games and --parallel must be >= 1, got {args.num_games} and {args.parallel}")
    try:
        board_spec(args.board, args.num_players)
    except UnsupportedConfig as exc:
        report.fail(str(exc))
    evaluate: BatchEvaluateFn = uniform_batch
    if args.model not in ("", "none") and Path(args.model).exists():
        evaluate = net_evaluator(Path(args.model), args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    planes, policies, values = play_all(args.board, evaluate, args.sims, args.num_games, args.parallel, args.seed)
    path = out / f"selfplay_{args.board}_{args.num_players}p_{int(time.time() * 1000)}.npz"
    np.savez_compressed(path, planes=np.stack(planes), policies=np.stack(policies), values=np.array(values, np.float32))
    report.result(
        kind="selfplay", board_type=args.board, num_players=args.num_players, num_games=args.num_games,
        num_samples=len(values), path=str(path), size_bytes=path.stat().st_size, sha256=sha256_file(path)[1],
        seconds=round(time.monotonic() - started, 3), model=args.model,
    )


if __name__ == "__main__":
    main()
