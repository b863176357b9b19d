"""A 15-minute chaos mix on a fleet: faults injected per kind, violations per kind (goal 0), recovery times.

`python -m ops.chaos` with every fault kind for --duration seconds (default 900), no shrinking;
prints one JSON line. Needs root (network namespaces). Run:
python -m ops.bench.bench_chaos [--seed 1] [--duration 900] [--workers 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ops.bench.common import emit, log


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One mix; its summary, trimmed to what a reader compares."""
    out = Path(tempfile.mkdtemp(prefix="rr-bench-chaos-"))
    log(f"bench_chaos: seed {args.seed}, {args.duration:.0f}s, report in {out}")
    done = subprocess.run([sys.executable, "-m", "ops.chaos", "--seed", str(args.seed), "--duration", str(args.duration),
                           "--workers", str(args.workers), "--json", "--shrink-runs", "0", "--out", str(out)],
                          stdout=subprocess.PIPE, text=True, timeout=args.duration + 1800, check=False)
    if not done.stdout.strip():
        return {"bench": "chaos", "seed": args.seed, "error": f"ops.chaos exited {done.returncode} without a summary"}
    s = json.loads(done.stdout)
    return {"bench": "chaos", "seed": args.seed, "duration_s": args.duration, "clean": s["clean"], "drained": s["drained"],
            "faults": {k: n for k, n in s["faults_by_kind"].items() if n}, "faults_not_injected": s["faults_not_injected"],
            "violations": {k: n for k, n in s["violations_by_kind"].items() if n}, "acknowledged": s["acknowledged"],
            "recovery_to_assignment_s": s["recovery_to_assignment_s"], "recovery_to_leader_s": s["recovery_to_leader_s"],
            "timeline": s["timeline"]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=900.0)
    parser.add_argument("--workers", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    emit(run(parse_args()))
