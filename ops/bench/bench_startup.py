"""Starting `rr` and `rr-service`: median wall and CPU seconds of N starts against a bare interpreter's start.

The ceiling ("raw") is `python -c pass` on the same interpreter and site-packages: no command can start
faster. Each round starts every command once, the order rotated round by round, so the machine's load
moves all of them together. `--tree PATH` (repeatable) runs the same commands from other source trees
(another worktree: the code before a change) in the same rounds, so before and after share the noise.

`--ups N` then times N whole `rr up` cycles per tree, trees alternating (ops/bench/up_cycle.py):
`up_ready_s` (spawn to a leader, this node alive and every child started) and `up_stop_s` (SIGINT to
exit), beside their ceilings timed in the same rounds: a bare nats-server's start plus one
`rr-service` child's start, and the bare server's stop.
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

import msgspec

from ops.bench.common import emit, log
from ops.bench.up_cycle import UpCycle, time_bare_server, time_up

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


def measure_ups(trees: dict[str, Path], ups: int) -> dict[str, object]:
    """Medians of `ups` rr up cycles per tree (trees alternating, order rotated) and of their ceilings, with each cycle."""
    cycles: dict[str, list[UpCycle]] = {label: [] for label in trees}
    bare_start, bare_stop, child = [], [], []
    for r in range(ups):
        labels = list(trees)[r % len(trees):] + list(trees)[: r % len(trees)]
        for label in labels:
            cycles[label].append(time_up(trees[label]))
        start_s, stop_s = time_bare_server()
        bare_start.append(start_s)
        bare_stop.append(stop_s)
        child.append(time_start(COMMANDS["rr-service --list"], trees["ours"])[0])
        log(f"up round {r + 1}/{ups} done")
    ready_ceiling = statistics.median(bare_start) + statistics.median(child)
    stop_ceiling = statistics.median(bare_stop)
    return {
        "ceiling": {"nats_start_s": round(statistics.median(bare_start), 3), "nats_stop_s": round(stop_ceiling, 3),
                    "child_start_s": round(statistics.median(child), 3)},
        **{label: _up_summary(runs, ready_ceiling, stop_ceiling) for label, runs in cycles.items()},
    }


def _up_summary(runs: list[UpCycle], ready_ceiling: float, stop_ceiling: float) -> dict[str, object]:
    ready = statistics.median(run.ready_s for run in runs)
    stop = statistics.median(run.stop_s for run in runs)
    return {"up_ready_s": round(ready, 3), "up_stop_s": round(stop, 3), "ready_ratio": round(ready_ceiling / ready, 3),
            "stop_ratio": round(stop_ceiling / stop, 3), "cycles": msgspec.to_builtins(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20, help="starts of each command (median reported)")
    parser.add_argument("--tree", action="append", default=[], metavar="PATH", help="another source tree to time beside this one")
    parser.add_argument("--ups", type=int, default=0, help="whole `rr up` start/stop cycles per tree after the starts (0: none)")
    args = parser.parse_args()
    trees = {"ours": PROJECT_ROOT, **{f"tree{i}": Path(path).resolve() for i, path in enumerate(args.tree, 1)}}
    seconds = measure(trees, args.starts)
    ups = measure_ups(trees, args.ups) if args.ups > 0 else None
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
        **({"up": ups} if ups is not None else {}),
        "load_average_end": os.getloadavg()[0],
    })


if __name__ == "__main__":
    main()
