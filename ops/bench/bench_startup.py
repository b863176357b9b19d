"""Starting `rr` and `rr-service`: median wall and CPU seconds of N starts against a bare interpreter's start.

The ceiling ("raw") is `python -c pass` on the same interpreter and site-packages: no command can start
faster. Each round starts every command once, the order rotated round by round, so the machine's load
moves all of them together. `--tree PATH` (repeatable) runs the same commands from other source trees
(another worktree: the code before a change) in the same rounds, so before and after share the noise.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ops.bench.common import emit, log

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# name -> the arguments after `python`: what a test, an operator or `rr up` starts
COMMANDS: dict[str, list[str]] = {
    "raw": ["-c", "pass"],
    "rr --help": ["-m", "cli.main", "--help"],
    "rr --version": ["-m", "cli.main", "--version"],
    "rr up --help": ["-m", "cli.main", "up", "--help"],
    "rr services --help": ["-m", "cli.main", "services", "--help"],
    "rr-service --list": ["-m", "cli.service_main", "--list"],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_start(args: list[str], tree: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one `python <args>` run from `tree`, to its exit."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cpu, started = _children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started, _children_cpu() - cpu


def measure(trees: dict[str, Path], starts: int) -> dict[str, dict[str, list[float]]]:
    """Per "<tree> <command>": the wall and CPU seconds of each start, in rotated order round by round."""
    sides = [(f"{label} {name}" if name != "raw" else "raw", args, tree) for label, tree in trees.items() for name, args in COMMANDS.items()]
    sides = list({side[0]: side for side in sides}.values())  # one raw side, from the first tree
    result: dict[str, dict[str, list[float]]] = {side[0]: {"wall": [], "cpu": []} for side in sides}
    for r in range(starts):
        for label, args, tree in sides[r % len(sides):] + sides[: r % len(sides)]:
            wall, cpu = time_start(args, tree)
            result[label]["wall"].append(wall)
            result[label]["cpu"].append(cpu)
        log(f"round {r + 1}/{starts} done")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20, help="starts of each command (median reported)")
    parser.add_argument("--tree", action="append", default=[], metavar="PATH", help="another source tree to time beside this one")
    args = parser.parse_args()
    trees = {"ours": PROJECT_ROOT, **{f"tree{i}": Path(path).resolve() for i, path in enumerate(args.tree, 1)}}
    seconds = measure(trees, args.starts)
    raw_wall = statistics.median(seconds["raw"]["wall"])
    emit({
        "bench": "startup",
        "starts": args.starts,
        "trees": {label: str(path) for label, path in trees.items()},
        "load_average": os.getloadavg()[0],
        "raw_wall_s": round(raw_wall, 3),
        "commands": {
            label: {
                "wall_s": round(statistics.median(side["wall"]), 3),
                "cpu_s": round(statistics.median(side["cpu"]), 3),
                "ratio": round(raw_wall / statistics.median(side["wall"]), 3),
            }
            for label, side in seconds.items()
        },
    })


if __name__ == "__main__":
    main()
