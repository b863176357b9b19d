"""A worker whose disk is full reports its attempt failed with the cause, and keeps running (tmpfs, root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import RrConfig
from eventbus.events import WorkAttemptFailed, WorkCompleted
from tests.bus_harness import provisioned_bus
from tests.helpers import fill, mounted_tmpfs
from tests.procs.worker_harness import CHILD, Scheduler, watching, worker_running, worker_settings

pytestmark = pytest.mark.timeout(60)

NODE = "gpu-1"


async def test_a_worker_that_cannot_write_reports_the_attempt_failed_and_runs_the_next_once_space_returns(
        nats_url: str, tmp_path: Path, eventually) -> None:
    with mounted_tmpfs(tmp_path / "small", "1m") as disk:
        await _fill_then_free(nats_url, tmp_path, disk, eventually)


async def _fill_then_free(nats_url: str, tmp_path: Path, disk: Path, eventually) -> None:  # type: ignore[no-untyped-def]
    data = disk / "data"
    settings = worker_settings(tmp_path, templates={"evaluation": CHILD}, data_dir=str(data))
    data.mkdir()
    fill(disk / "filler")
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        async with worker_running(nats_url, NODE, RrConfig(worker=settings)):
            await sched.add("w-full", "evaluation")
            await sched.assign("w-full", NODE)
            [failed] = await eventually(lambda: log.of(WorkAttemptFailed, work_id="w-full"), timeout=20,
                                        message="the attempt reported failed")
            assert "No space left on device" in failed.reason, failed.reason
            (disk / "filler").unlink()  # space returns
            await sched.add("w-after", "evaluation")
            await sched.assign("w-after", NODE)
            await eventually(lambda: log.of(WorkCompleted, work_id="w-after"), timeout=30, message="the next one completed")
