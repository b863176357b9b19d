"""A worker process killed with SIGKILL mid-job leaves no orphan: the next worker process kills and reports it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]
import yaml

from eventbus.events import WorkAttemptFailed, WorkHandedBack, WorkStarted
from services.worker.records import read_records
from services.worker.recovery import ENDED_WHILE_DOWN, ORPHAN_KILLED
from tests.bus_harness import provisioned_bus
from tests.procs.worker_harness import CHILD, Scheduler, pids_in, wait_consumer, watching

NODE = "gpu-1"
ROOT = str(Path(__file__).resolve().parents[1])


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "rr.yaml"
    path.write_text(yaml.safe_dump({"worker": {
        "data_dir": str(tmp_path / "data"), "grace_s": 1.0, "max_parallel_jobs": 2, "gpu_idle_check": False,
        "templates": {"selfplay": CHILD + " --hang --children 1", "chore": CHILD + " --sleep 3"},
    }}))
    return path


@contextlib.asynccontextmanager
async def worker_process(url: str, config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`rr-service worker` as its own process; killed (if still running) and reaped on exit."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.service_main", "worker", "--nats", url, "--node-id", NODE, "--config", str(config),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)


def pid_file(tmp_path: Path, work_id: str) -> Path:
    return tmp_path / "data" / "worker" / NODE / "jobs" / work_id / "a1" / "out" / "pids"


async def test_a_worker_killed_mid_job_kills_the_orphan_and_reports_both_jobs_when_it_restarts(
        nats_url: str, tmp_path: Path, eventually) -> None:
    config = write_config(tmp_path)
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        async with worker_process(nats_url, config) as first:
            await wait_consumer(bus, NODE, timeout=30)
            await sched.add("w-orphan")
            await sched.add("w-short", "chore")
            await sched.assign("w-orphan", NODE)
            await sched.assign("w-short", NODE)
            await eventually(lambda: len(log.of(WorkStarted)) == 2 and pid_file(tmp_path, "w-orphan").exists()
                             and pid_file(tmp_path, "w-short").exists(), timeout=30, message="both jobs run")
            first.kill()
            await first.wait()
        orphans = pids_in(pid_file(tmp_path, "w-orphan"))
        [short] = pids_in(pid_file(tmp_path, "w-short"))
        assert not any(gone(p) for p in orphans), "the jobs outlive a SIGKILLed worker"
        await eventually(lambda: gone(short), timeout=20, message="the short job ends while no worker runs")
        assert {r.work_id for r in read_records(tmp_path / "data" / "worker" / NODE / "running.json")} == {"w-orphan", "w-short"}

        async with worker_process(nats_url, config):
            await eventually(lambda: len(log.of(WorkHandedBack)) == 2, timeout=30, message="both handed back")
            [orphan] = log.of(WorkHandedBack, work_id="w-orphan")
            [ended] = log.of(WorkHandedBack, work_id="w-short")
            assert log.of(WorkAttemptFailed) == [], "a worker restart costs no attempt"
            await eventually(lambda: all(gone(p) for p in orphans), timeout=10, message="the orphan's group is gone")
            await eventually(lambda: read_records(tmp_path / "data" / "worker" / NODE / "running.json") == [],
                             timeout=10, message="records cleared")
    assert (orphan.node, orphan.attempt, orphan.reason) == (NODE, 1, ORPHAN_KILLED)
    assert (ended.node, ended.attempt, ended.reason) == (NODE, 1, ENDED_WHILE_DOWN)
