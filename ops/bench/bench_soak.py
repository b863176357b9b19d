"""A long soak of a fleet: 20 hosts, synthetic jobs at a steady rate, a fault every few minutes.

Reports availability (the fraction of samples with a scheduler leader in office and an assignment
stored in the last --window-s), memory (RSS) and file-descriptor growth per process per hour (each
process judged on its longest-lived pid; faults restart some), log growth per hour (every host's
logs directory), the faults injected and the checker's violations after heal and drain.
Needs root (network namespaces). Run:
python -m ops.bench.bench_soak [--workers 17] [--duration 14400] [--seed 1] [--sample-s 60] [--gap-s 120,300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import psutil

from eventbus.connection import Bus
from ops.bench.common import emit, log
from ops.chaos.cli import fleet
from ops.chaos.growth import ProcessSample, availability, process_growth, slope_per_hour, worst
from ops.chaos.run import RunSettings, chaos
from ops.chaos.schedule import Pacing, parse_kinds, plan_schedule
from ops.fleet import launch, netns
from ops.fleet.plan import FleetPlan

# Process faults and the cluster's own: a soak watches growth, so no kind is left out.
DEFAULT_FAULTS = ""


def snapshot(plan: FleetPlan) -> tuple[list[ProcessSample], int]:
    """Every fleet process's RSS and open descriptors now, and the bytes under every host's logs (blocking)."""
    now, out = time.time(), []
    for host in plan.hosts:
        if not netns.namespace_exists(host.namespace):
            continue
        for pid, name in launch.host_processes(host.namespace):
            try:
                proc = psutil.Process(pid)
                out.append(ProcessSample(t=now, host=host.name, name=name, pid=pid, rss_bytes=proc.memory_info().rss,
                                         fds=proc.num_fds()))
            except psutil.Error:
                continue  # it ended between the listing and the look
    logs = sum(f.stat().st_size for h in plan.hosts for f in h.path("logs").glob("*.log") if f.is_file())
    return out, logs


class Sampler:
    """Samples the fleet every `every_s` seconds for the run's window."""

    def __init__(self, plan: FleetPlan, every_s: float) -> None:
        self.plan, self.every_s = plan, every_s
        self.samples: list[ProcessSample] = []
        self.times: list[float] = []
        self.logs: list[tuple[float, float]] = []  # (t, MiB)

    async def __call__(self, _bus: Bus, stop: asyncio.Event) -> None:
        while not stop.is_set():
            samples, logs = await asyncio.to_thread(snapshot, self.plan)
            now = time.time()
            self.samples += samples
            self.times.append(now)
            self.logs.append((now, logs / 2**20))
            try:
                await asyncio.wait_for(stop.wait(), self.every_s)
            except TimeoutError:
                pass


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Up, soak, heal, drain, check, down; one JSON line of results."""
    with fleet(None, args.workers, keep=False, workload=args.workload) as (root, plan):
        gap = tuple(float(x) for x in args.gap_s.split(","))
        pacing = Pacing(warmup_s=min(60.0, args.duration / 4), gap_s=(gap[0], gap[-1]), hold_s=(5.0, 30.0))
        schedule = plan_schedule(args.seed, args.duration, parse_kinds(args.faults),
                                 [h.name for h in plan.nats_hosts()], [h.name for h in plan.hosts if h.kind == "worker"], pacing)
        log(f"bench_soak: {len(plan.hosts)} hosts, {len(schedule)} faults over {args.duration:.0f}s")
        sampler = Sampler(plan, args.sample_s)
        settings = RunSettings(seed=args.seed, duration_s=args.duration, rate_per_s=args.rate, drain_timeout_s=600.0)
        outcome = asyncio.run(chaos(root, plan, schedule, settings, root / f"soak-{args.seed}", beside=sampler))
    growth = process_growth(sampler.samples)
    summary = outcome.summary
    return {
        "bench": "soak", "hosts": len(plan.hosts), "duration_s": args.duration, "seed": args.seed,
        "availability": availability(sampler.times, outcome.timeline, args.window_s),
        "faults": {k: n for k, n in summary.faults_by_kind.items() if n},
        "violations": {k: n for k, n in summary.violations_by_kind.items() if n}, "clean": summary.clean,
        "acknowledged": summary.acknowledged, "recovery_to_assignment_s": summary.recovery_to_assignment_s.p50,
        "rss_mib_per_h_max": max((g.rss_mib_per_h for g in growth.values()), default=0.0),
        "fds_per_h_max": max((g.fds_per_h for g in growth.values()), default=0.0),
        "worst_rss": {k: g.rss_mib_per_h for k, g in worst(growth).items()},
        "logs_mib_per_h": round(slope_per_hour(sampler.logs), 2), "processes": len(growth), "samples": len(sampler.times),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=17, help="worker hosts beside the 3 NATS hosts (default 17: 20 hosts)")
    parser.add_argument("--duration", type=float, default=4 * 3600.0, help="seconds of soak (default 4 h)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default=DEFAULT_FAULTS, help="fault kinds (default: every kind)")
    parser.add_argument("--gap-s", default="120,300", help="seconds between fault starts, min,max (default 120,300)")
    parser.add_argument("--rate", type=float, default=0.5, help="synthetic items added per second")
    parser.add_argument("--workload", default='{"populator": false}',
                        help="the fleet's workload (ops/fleet/files.py Workload); default: synthetic work only, no populator selfplay")
    parser.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--window-s", type=float, default=60.0, help="an assignment within this window counts as flowing")
    return parser.parse_args()


if __name__ == "__main__":
    emit(run(parse_args()))
    sys.exit(0)
