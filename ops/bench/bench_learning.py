"""Does the loop learn? `rr up` from an empty data dir for M minutes, then the rated curve of each config.

For each config: the promoted generations in order, each with the minutes since `rr up` started
when it was promoted and its rating on the config's scale (random play = 0) with the 95% interval,
the pure-search anchor's rating, and how many candidates were rated but not promoted. A PNG of
Elo against wall time (one line per config, intervals as bars) is written next to the result.
Then the installed best model of each config plays `--check-games` games against the pure-search
anchor at equal simulations (goal: >= 75% won), and its raw policy (argmax, no search) as many
against random play (goal: >= 90%).
Run: python -m ops.bench.bench_learning [--minutes 15] [--config rr.yaml] [--png elo.png] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from config.nodedirs import canonical_path
from eventbus.connection import connect
from eventbus.events import Event, ModelPromoted, ModelRated, WorkAdded
from eventbus.history import events
from eventbus.natsserver import free_port
from ops.bench.common import emit, log
from ops.bench.png_chart import line_chart
from workload.evaluate import match, model_player, random_player, search_player
from workload.game import GameState, encode, legal_moves
from workload.mcts import uniform_evaluator
from workload.net import Evaluator, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def curves(log_events: list[Event], started: dt.datetime) -> dict[str, dict[str, Any]]:
    """Per config: promoted generations with minutes since `started` and rating, the anchor, rejected candidates."""
    rated: dict[str, ModelRated] = {}
    for e in log_events:
        if isinstance(e, ModelRated):
            rated[e.model_id] = e
    promoted = [e for e in log_events if isinstance(e, ModelPromoted)]
    out: dict[str, dict[str, Any]] = {}
    for e in rated.values():
        config = f"{e.board_type}_{e.num_players}p"
        entry = out.setdefault(config, {"generations": [], "anchor": None, "rated_not_promoted": 0})
        if e.kind == "anchor":
            entry["anchor"] = {"model_id": e.model_id, "elo": e.elo, "interval": e.interval}
    promoted_ids = {p.model_id for p in promoted}
    for p in promoted:
        config = f"{p.board_type}_{p.num_players}p"
        r = rated.get(p.model_id)
        minutes = (p.ts - started).total_seconds() / 60 if p.ts else None
        out.setdefault(config, {"generations": [], "anchor": None, "rated_not_promoted": 0})["generations"].append({
            "generation": p.generation, "model_id": p.model_id, "minutes": round(minutes, 2) if minutes is not None else None,
            "elo": r.elo if r else None, "interval": r.interval if r else None,
        })
    for e in rated.values():
        if e.kind == "candidate" and e.model_id not in promoted_ids:
            out[f"{e.board_type}_{e.num_players}p"]["rated_not_promoted"] += 1
    return dict(sorted(out.items()))


def chart(result: dict[str, dict[str, Any]], path: Path) -> None:
    """Elo against minutes, one series per config (in sorted order), rated generations only; anchors dashed."""
    series = [[(g["minutes"], g["elo"], g["interval"] or 0.0) for g in entry["generations"]
               if g["elo"] is not None and g["minutes"] is not None] for _, entry in sorted(result.items())]
    levels = [entry["anchor"]["elo"] if entry["anchor"] else None for _, entry in sorted(result.items())]
    line_chart(series, path, levels=levels)


async def run_up(args: argparse.Namespace, data_dir: Path) -> tuple[list[Event], dt.datetime, int]:
    """`rr up` for --minutes, then its whole log; also the work items it queued."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RR_")}
    env.update(PYTHONPATH=str(ROOT), RR_NODE_ID="bench-learning")
    argv = [sys.executable, "-m", "cli.main", "up", "--grace", "5", "--nats-port", str(port), "--data-dir",
            str(data_dir), "--api-port", str(free_port())] + (["--config", str(args.config)] if args.config else [])
    started = dt.datetime.now(dt.UTC)
    up = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                                              stderr=asyncio.subprocess.DEVNULL, env=env, cwd=data_dir)
    try:
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            await asyncio.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
            log(f"{(args.minutes * 60 - (deadline - time.monotonic())) / 60:.1f} min of {args.minutes}")
        bus = await connect(f"nats://127.0.0.1:{port}", node_id="bench-learning", initial_attempts=3)
        try:
            found = [e async for _seq, e in events(bus) if isinstance(e, Event)]
        finally:
            await bus.close()
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGINT)
        await asyncio.wait_for(up.wait(), 60)
    return found, started, sum(isinstance(e, WorkAdded) for e in found)


def policy_player(checkpoint: Path) -> Any:
    """The net's raw policy: its most probable legal move, no search."""
    net, _ = load_checkpoint(checkpoint)
    evaluate = Evaluator(net, torch.device("cpu"))

    def move(state: GameState, rng: np.random.Generator) -> int:
        priors, _ = evaluate(encode(state))
        legal = legal_moves(state)
        return int(legal[int(np.argmax(priors[legal]))])

    return move


def check_best(models_dir: Path, config: str, games: int, sims: int) -> dict[str, Any] | None:
    """The installed best of `config` against the anchor (equal sims) and its raw policy against random play."""
    board, players = config.rsplit("_", 1)
    path = canonical_path(models_dir, board, int(players.rstrip("p")))
    if not path.exists():
        return None
    rng = np.random.default_rng(0)
    best = model_player(path, sims, torch.device("cpu"))
    vs_anchor = match(board, best, search_player(uniform_evaluator, sims), games, rng)
    policy_vs_random = match(board, policy_player(path), random_player, games, rng)
    return {"vs_anchor_win_rate": vs_anchor["win_rate"], "policy_vs_random_win_rate": policy_vs_random["win_rate"],
            "games": games, "sims": sims, "goals": {"vs_anchor": 0.75, "policy_vs_random": 0.9}}


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the loop, fold its ratings, write the PNG, one JSON line."""
    with tempfile.TemporaryDirectory(prefix="rr-bench-learning-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        found, started, items = asyncio.run(run_up(args, data_dir))
        result = curves(found, started)
        torch.set_num_threads(1)
        for config, entry in result.items():
            entry["check"] = check_best(data_dir / "models", config, args.check_games, args.sims)
    chart(result, args.png)
    for config, entry in result.items():
        gens = ", ".join(f"gen {g['generation']} at {g['minutes']} min: {g['elo']} ± {g['interval']}"
                         for g in entry["generations"])
        log(f"{config}: anchor {entry['anchor']}; {gens or 'nothing promoted'}")
    return {"bench": "learning", "minutes": args.minutes, "events": len(found), "work_items": items,
            "configs": result, "png": str(args.png), "cpus": os.cpu_count()}


def parse_args() -> argparse.Namespace:
    """--minutes, --config, --png, --data-dir."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--config", type=Path, default=None, help="rr config for rr up (default: none, the defaults)")
    parser.add_argument("--png", type=Path, default=Path("bench_learning.png"))
    parser.add_argument("--data-dir", type=Path, default=None, help="an empty dir to keep (default: a temp dir)")
    parser.add_argument("--check-games", type=int, default=40, help="games of each check of the best models")
    parser.add_argument("--sims", type=int, default=16, help="simulations of the checks (pipeline.evaluation_sims)")
    return parser.parse_args()


if __name__ == "__main__":
    emit(main(parse_args()))
