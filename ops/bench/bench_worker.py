"""Worker overhead per job: WORK_ASSIGNED published -> WORK_COMPLETED received, for a job that does nothing.

ours:    `rr-service worker` in its own process, running `/bin/true` for each assignment: the item's
         history read, the record file, spawn in a new session, WORK_STARTED, the exit, the output
         scan, WORK_COMPLETED; timed from our publish of WORK_ASSIGNED to our receipt of WORK_COMPLETED.
middle:  services.worker.jobs.Job running `/bin/true` in this process (process control, no events).
ceiling: a bare `asyncio.create_subprocess_exec("/bin/true")` + wait in this process.
Jobs run one after another; sides alternate round by round. `overhead_ms` = ours - ceiling (medians).
Run: python -m ops.bench.bench_worker [--jobs 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from eventbus.connection import Bus
from eventbus.events import LeaderElected, WorkAdded, WorkAssigned, WorkCompleted, decode, utcnow
from eventbus.follow import follow
from eventbus.history import Record
from eventbus.publisher import Publisher
from eventbus.streams import EVENTS_STREAM, StreamSettings, provision
from eventbus.subjects import type_filter
from ops.bench.bench_failover import percentile
from ops.bench.common import bench_bus, bench_server, emit, log, server_version
from services.worker.jobs import Job, JobLimits

ROOT = Path(__file__).resolve().parents[2]
NODE = "bench-worker"
COMMAND = "/bin/true"
# A type whose template runs a process: a sync item is the node's sync service's to copy, and the worker runs none.
WORK_TYPE = "gauntlet"
WORK_IDS = itertools.count()


async def bare_once(_: int) -> float:
    """Seconds for one bare asyncio subprocess of the command."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(COMMAND)
    await proc.wait()
    return time.perf_counter() - started


def job_runner(tmp: Path) -> Callable[[int], Awaitable[float]]:
    """Seconds for one Job (new session, pipes read, group reaped), no events."""
    limits = JobLimits(timeout_s=60, grace_s=5)

    async def once(i: int) -> float:
        started = time.perf_counter()
        job = Job([COMMAND], env=dict(os.environ), cwd=tmp / f"job-{i}", log_path=tmp / f"job-{i}.log",
                  limits=limits, on_progress=lambda f, m: None)
        await job.start()
        await job.run()
        return time.perf_counter() - started

    return once


class Completions:
    """WORK_COMPLETED events as they arrive, by work id."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[float]] = {}

    def on_record(self, record: Record) -> None:
        """Resolve the waiter of a completed item with the time it was received."""
        event = decode(record.data)
        if isinstance(event, WorkCompleted) and event.work_id in self.waiting:
            future = self.waiting.pop(event.work_id)
            if not future.done():
                future.set_result(time.perf_counter())


def worker_runner(bus: Bus, completions: Completions) -> Callable[[int], Awaitable[float]]:
    """Seconds from publishing a WORK_ASSIGNED to receiving its WORK_COMPLETED."""
    publisher = Publisher(bus)
    deadline = utcnow().replace(year=utcnow().year + 1)
    announced: list[object] = []

    async def once(_: int) -> float:
        work_id = f"w-{next(WORK_IDS):06d}"
        if not announced:  # the worker takes only assignments of a term it has seen elected
            announced.append(await publisher.publish(LeaderElected(role="scheduler", node=bus.node_id, epoch=1)))
        await publisher.publish(WorkAdded(work_id=work_id, work_type=WORK_TYPE, board_type="hex8", num_players=2))
        done = asyncio.get_running_loop().create_future()
        completions.waiting[work_id] = done
        started = time.perf_counter()
        await publisher.publish(WorkAssigned(work_id=work_id, node=NODE, attempt=1, deadline=deadline, epoch=1))
        finished: float = await asyncio.wait_for(done, 30)
        return finished - started

    return once


@contextlib.asynccontextmanager
async def worker_process(url: str, tmp: Path) -> AsyncIterator[None]:
    """`rr-service worker` for NODE running COMMAND for every WORK_TYPE item; stopped on exit (its log in tmp)."""
    config = tmp / "rr.yaml"
    config.write_text(yaml.safe_dump({"worker": {
        "data_dir": str(tmp / "data"), "templates": {WORK_TYPE: COMMAND}, "gpu_idle_check": False, "max_parallel_jobs": 1}}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.service_main", "worker", "--nats", url, "--node-id", NODE, "--config", str(config),
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=(tmp / "worker.log").open("wb"), stderr=asyncio.subprocess.STDOUT)
    try:
        yield
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def wait_worker_ready(bus: Bus) -> None:
    """Until the worker's durable consumer exists."""
    for _ in range(600):
        with contextlib.suppress(Exception):
            await bus.js.consumer_info(EVENTS_STREAM, f"worker-{NODE}")
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the worker did not create its consumer within 30 s")


async def measure(rounds: int, jobs: int, sides: dict[str, Callable[[int], Awaitable[float]]]) -> dict[str, list[float]]:
    """Every side runs `jobs` jobs per round, sides rotating which goes first; per-job seconds."""
    names = list(sides)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            batch = [await sides[name](i) for i in range(jobs)]
            times[name] += batch
            log(f"round {r + 1}/{rounds} {name}: median {statistics.median(batch) * 1000:.2f} ms/job")
    return times


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Start a server and a worker, run the three sides, summarise."""
    with tempfile.TemporaryDirectory(prefix="rr-bench-worker-") as tmp_name:
        tmp = Path(tmp_name)
        async with bench_server() as server, bench_bus(server.url) as bus:
            await provision(bus.js, StreamSettings())
            completions = Completions()
            following = asyncio.ensure_future(follow(bus, completions.on_record, subject=type_filter("WORK_COMPLETED")))
            try:
                async with worker_process(server.url, tmp):
                    await wait_worker_ready(bus)
                    await worker_runner(bus, completions)(0)  # warm: imports and first consumer pull
                    times = await measure(args.rounds, args.jobs, {
                        "ceiling": bare_once, "job": job_runner(tmp), "worker": worker_runner(bus, completions)})
            finally:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
    ms = {name: [t * 1000 for t in values] for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in ms.items()}
    return {
        "bench": "worker_overhead", "command": COMMAND, "jobs": args.jobs * args.rounds,
        "ceiling_ms": round(median["ceiling"], 3), "job_ms": round(median["job"], 3), "worker_ms": round(median["worker"], 3),
        "worker_p90_ms": round(percentile(ms["worker"], 90), 3), "overhead_ms": round(median["worker"] - median["ceiling"], 3),
        "ratio": round(median["ceiling"] / median["worker"], 4),
        "nats_server": server_version(), "cpus": os.cpu_count(),
    }


def parse_args() -> argparse.Namespace:
    """--jobs per round per side, --rounds."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    emit(asyncio.run(main(parse_args())))
