"""A tournament among three hex8 nets of known strength, as a worker runs it: a report for
tests/test_workload_tournament.py.

Usage: python -m tests.procs.known_strength_tournament
In a temporary directory it saves a fresh net and a zeroed one, plays the pure search's own games and trains a net on
them, then runs the tournament item's command line (the default template, seeded) over the three and the anchors, and
prints one JSON line, a `TournamentReport`: the job's result as the worker would read it. About 20 s of one core and
no wait, so the session runs it beside the tests before that one (tests/background_runs.py), which judges the report.
A program that fails fails the run with its traceback and output.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import torch

from config.sections.templates import DEFAULT_TEMPLATES
from eventbus.events import WorkAdded
from servicekit.templates import WorkerValues, expand, template_values
from workload.game import board_spec
from workload.net import PolicyValueNet, save_checkpoint

# The item the report's result answers: the test rates it with these fields.
ITEM = WorkAdded(work_id="tour-1", work_type="tournament", board_type="hex8", num_players=2, num_games=8,
                 params={"models": "", "sims": 16})


class TournamentReport(msgspec.Struct, frozen=True, kw_only=True):
    """The tournament program's result, as the worker reads it from the job's last line."""

    result: dict[str, Any]


def zero_net() -> PolicyValueNet:
    """Uniform priors and a value of 0 everywhere: exactly the pure search."""
    net = PolicyValueNet(board_spec("hex8"))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return net


def run(argv: list[str]) -> dict[str, Any]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=280, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["result"]  # type: ignore[no-any-return]


def workload(module: str, *args: str) -> dict[str, Any]:
    return run([sys.executable, "-m", f"workload.{module}", *args])


def tournament(tmp: Path) -> dict[str, Any]:
    # Known order, each step shown by the gate and the loop: a fresh net's random value misleads
    # its search (below the pure search); a zeroed net is exactly the pure search; a net trained on
    # the pure search's own games adds to it. Seeded throughout, so the run repeats exactly.
    torch.manual_seed(7)
    save_checkpoint(PolicyValueNet(board_spec("hex8")), tmp / "fresh.pth", {})
    save_checkpoint(zero_net(), tmp / "zero.pth", {})
    played = workload("selfplay", "--board", "hex8", "--num-games", "96", "--sims", "32", "--seed", "1", "--out", str(tmp))
    workload("train", "--board", "hex8", "--data", played["path"], "--out", str(tmp / "trained.pth"), "--epochs", "8",
             "--seed", "1")
    models = ",".join(f"{name}={tmp / name}.pth" for name in ("fresh", "zero", "trained"))
    item = msgspec.structs.replace(ITEM, params={**ITEM.params, "models": models})
    values = WorkerValues(python=sys.executable, output_dir=str(tmp), model_path="none", best_model_id="none",
                          work_id=item.work_id, attempt=1, node="n1")
    return run([*expand("tournament", DEFAULT_TEMPLATES["tournament"], template_values(item, values)), "--seed", "5"])


def main() -> int:
    # SIGTERM (the session ending first) as an exception, so that subprocess.run kills the program it waits on.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="rr-tournament-") as tmp:
        report = TournamentReport(result=tournament(Path(tmp)))
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
