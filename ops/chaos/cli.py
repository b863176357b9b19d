"""`python -m ops.chaos --seed N --duration S [--faults kinds] [--hosts h,...] [--smoke] [--json]` (root): a randomized fault mix, checked.

Brings up a fleet of its own (`python -m ops.fleet up`, run id `c....`, so it never touches
another fleet) or uses the one in `--root`, runs the client and the seeded nemesis together,
heals, drains and runs the checker. Exit 0 when the history is clean; 1 on a violation, after
printing the seed and the shortest fault schedule found to reproduce it (each rerun on a fresh
fleet, at most `--shrink-runs` of them); 2 when the run could not be made. `--smoke` plans every
kind once, densely, in a window of its own (ops/chaos/smoke.py) instead of the seed's random mix.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import string
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec

from config.settings import load_config
from eventbus.errors import InvalidConfig
from ops.chaos.run import Outcome, RunSettings, chaos
from ops.chaos.schedule import Fault, ScheduleError, decode_schedule, encode_schedule, parse_kinds, plan_schedule
from ops.chaos.shrink import shrink
from ops.chaos.smoke import SmokePacing, plan_smoke, window_s
from ops.fleet.launch import operator_config
from ops.fleet.plan import FleetError, FleetPlan
from ops.fleet.state import load

DEFAULT_ROOT = Path("/tmp/rr-chaos")
DEFAULT_DURATION_S = 90.0


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m ops.chaos", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, required=True, help="the nemesis's seed: the same seed replays the same schedule")
    p.add_argument("--duration", type=float, help="seconds of faults and workload (default 90; with --smoke, the plan's own window)")
    p.add_argument("--smoke", action="store_true",
                   help="every fault kind once, packed as densely as the fleet's lease TTL allows (ops/chaos/smoke.py)")
    p.add_argument("--faults", default="", help="comma-separated fault kinds (default: every kind; see ops/chaos/schedule.py)")
    p.add_argument("--hosts", default="", help="comma-separated hosts faults may target (default: every host)")
    p.add_argument("--schedule", type=Path, help="replay this schedule (a schedule.json of an earlier run) instead of the seed's")
    p.add_argument("--root", type=Path, help="use the fleet in this directory (python -m ops.fleet --root); default: bring one up")
    p.add_argument("--workers", type=int, default=3, help="worker hosts of a fleet brought up (default 3)")
    p.add_argument("--rate", type=float, default=0.5, help="work items the client adds per second (default 0.5)")
    p.add_argument("--drain-timeout", type=float, default=240.0, help="seconds to wait for acknowledged work to end (default 240)")
    p.add_argument("--shrink-runs", type=int, default=6, help="reruns allowed to shrink a failing schedule (default 6; 0: none)")
    p.add_argument("--out", type=Path, help="report directory (default <fleet root>/chaos-<seed>)")
    p.add_argument("--keep", action="store_true", help="leave the fleet brought up running")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return p


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fleet(root: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.fleet", "--root", str(root), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@contextmanager
def fleet(root: Path | None, workers: int, keep: bool, workload: str = "") -> Iterator[tuple[Path, FleetPlan]]:
    """The fleet in `root`, or a new one (taken down afterwards unless `keep`); FleetError naming what failed."""
    if root is not None:
        state = load(root.absolute())
        if state is None:
            raise FleetError(f"no fleet in {root} (no fleet.json): `python -m ops.fleet --root {root} up` first, or leave --root out")
        yield root.absolute(), state.plan
        return
    run_id = "c" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    root = DEFAULT_ROOT / run_id
    _say(f"chaos: bringing up fleet {run_id} in {root} ...")
    try:
        extra = ["--workload", workload] if workload else []
        up = _fleet(root, "up", "--workers", str(workers), "--run-id", run_id, "--timeout", "420", *extra, timeout=600)
        if up.returncode != 0:
            raise FleetError(f"fleet up failed: {up.stderr.strip()[-1500:]}")
        state = load(root)
        assert state is not None
        yield root, state.plan
    finally:
        if not keep:
            _fleet(root, "down", timeout=180)


def targets(plan: FleetPlan, hosts: str) -> tuple[list[str], list[str]]:
    """The NATS and worker hosts faults may hit: `--hosts`, else all; FleetError naming an unknown host."""
    chosen = [plan.host(h.strip()) for h in hosts.split(",") if h.strip()] if hosts else list(plan.hosts)
    return [h.name for h in chosen if h.kind == "nats"], [h.name for h in chosen if h.kind == "worker"]


def smoke_pacing(plan: FleetPlan) -> SmokePacing:
    """The smoke profile's pacing for a fleet: its lease TTL and renewal interval, as its operator config sets them."""
    leadership = load_config(operator_config(plan)).leadership
    return SmokePacing(lease_ttl_s=leadership.ttl_s, renew_every_s=leadership.ttl_s * leadership.renew_every)


def plan_for(args: argparse.Namespace, plan: FleetPlan) -> tuple[Fault, ...]:
    """The seed's schedule on the hosts faults may hit: the smoke profile's with `--smoke`, else the random mix's."""
    nats, workers = targets(plan, args.hosts)
    if args.smoke:
        return plan_smoke(args.seed, parse_kinds(args.faults), nats, workers, smoke_pacing(plan))
    return plan_schedule(args.seed, args.duration or DEFAULT_DURATION_S, parse_kinds(args.faults), nats, workers)


def run_duration(given: float | None, smoke: bool, schedule: Sequence[Fault]) -> float:
    """The run's window: `--duration`, else the smoke plan's own or 90 s; ScheduleError when a smoke plan outlasts it."""
    if smoke and given is not None and given + 0.01 < window_s(schedule):
        raise ScheduleError(f"--duration {given:g}: the smoke plan's faults run until {window_s(schedule):g} s; "
                            "leave --duration out with --smoke, or give at least that")
    return given or (window_s(schedule) if smoke else DEFAULT_DURATION_S)


def run_once(args: argparse.Namespace, schedule: Sequence[Fault] | None, out: Path | None) -> tuple[Outcome, tuple[Fault, ...]]:
    """One fleet (given or new), one run; the seed's schedule when `schedule` is None."""
    with fleet(args.root, args.workers, args.keep) as (root, plan):
        schedule = plan_for(args, plan) if schedule is None else schedule
        duration = run_duration(args.duration, args.smoke, schedule)
        settings = RunSettings(seed=args.seed, duration_s=duration, rate_per_s=args.rate, drain_timeout_s=args.drain_timeout)
        _say(f"chaos: seed {args.seed}, {len(schedule)} faults over {duration:.0f}s")
        outcome = asyncio.run(chaos(root, plan, schedule, settings, out or root / f"chaos-{args.seed}"))
        return outcome, tuple(schedule)


def reproduces(args: argparse.Namespace, kinds: set[str]) -> Callable[[tuple[Fault, ...]], bool]:
    """The real oracle of shrinking: rerun a schedule on a fresh fleet; True when a violation of the same kind recurs."""
    def oracle(faults: tuple[Fault, ...]) -> bool:
        outcome, _ = run_once(args, faults, None)
        found = {k for k, n in outcome.summary.violations_by_kind.items() if n}
        _say(f"chaos: shrinking: {len(faults)} faults -> {'reproduces' if found & kinds else 'clean'}")
        return bool(found & kinds)
    return oracle


def main(argv: list[str] | None = None) -> int:
    """Run, report; exit 0 clean, 1 on a violation, 2 when the run could not be made."""
    args = parser().parse_args(argv)
    try:
        given = decode_schedule(args.schedule.read_bytes(), str(args.schedule)) if args.schedule else None
        parse_kinds(args.faults)
        outcome, schedule = run_once(args, given, args.out)
    except (FleetError, ScheduleError, InvalidConfig, OSError) as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    result = outcome.summary
    if not result.clean and args.shrink_runs > 0 and args.root is None:
        kinds = {k for k, n in result.violations_by_kind.items() if n} or {"unfinished"}
        shrunk = shrink(schedule, reproduces(args, kinds), max_runs=args.shrink_runs)
        result = msgspec.structs.replace(result, shrunk_schedule=[f for f in shrunk.faults if isinstance(f, Fault)])
    print(msgspec.json.encode(result).decode() if args.json else render(result))
    if not result.clean:
        shortest = result.shrunk_schedule if result.shrunk_schedule is not None else result.schedule
        print(f"chaos: violation with seed {result.seed}; shortest schedule known to reproduce it ({len(shortest)} faults):\n"
              f"{encode_schedule(shortest).decode()}\nreplay: python -m ops.chaos --seed {result.seed} --schedule FILE", file=sys.stderr)
    return 0 if result.clean else 1


def render(result: object) -> str:
    """The summary for people."""
    plain = msgspec.to_builtins(result)
    lines = [(f"seed {plain['seed']}: {'clean' if plain['clean'] else 'VIOLATIONS'} ({plain['acknowledged']} acknowledged, "
              f"{plain['events']} events{'' if plain['drained'] else ', not drained'})"),
             "faults: " + ", ".join(f"{k} {n}" for k, n in plain["faults_by_kind"].items() if n),
             "violations: " + (", ".join(f"{k} {n}" for k, n in plain["violations_by_kind"].items() if n) or "none"),
             f"recovery to assignment: {plain['recovery_to_assignment_s']}", f"recovery to leader: {plain['recovery_to_leader_s']}",
             *plain["violations"], f"timeline: {plain['timeline']}",
             ]
    return "\n".join(lines)
