"""Training starts only on data present on its node: it waits for the sync's copy instead of failing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from config.nodedirs import received_path
from config.settings import RrConfig
from eventbus.events import WorkAttemptFailed, WorkCompleted, WorkStarted
from tests.bus_harness import provisioned_bus
from tests.procs.worker_harness import Scheduler, watching, worker_running, worker_settings

NODE = "trainer-1"
# Reads every batch it is given: it fails if one is missing, as the real trainer would.
READ_ALL = "{python} -c \"import sys; [open(p).read() for p in sys.argv[1:]]\" {data*}"


async def test_training_waits_for_a_batch_the_sync_has_not_copied_yet_then_reads_the_copy(
        nats_url: str, tmp_path: Path, eventually, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.worker.runner")
    config = RrConfig(worker=worker_settings(tmp_path, templates={"training": READ_ALL}, data_wait_s=120.0))
    origin = "/on/another/node/w-sp-a1.npz"
    copy = received_path(tmp_path / "data" / "sync", "hex8", 2, "w-sp-a1", origin)
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        await sched.elected(3)
        async with worker_running(nats_url, NODE, config):
            await sched.add("w-tr", "training", data=origin, input_batches="w-sp-a1")
            await sched.assign("w-tr", NODE)
            await eventually(lambda: "w-tr waits for 1 batch(es)" in caplog.text, timeout=30, message="the worker waits for the batch")
            assert log.of(WorkStarted) == [] and log.of(WorkAttemptFailed) == []
            copy.parent.mkdir(parents=True)
            copy.write_text("samples")  # the sync service's copy lands
            await eventually(lambda: log.of(WorkCompleted) or log.of(WorkAttemptFailed), timeout=60, message="the attempt ended")
    assert log.of(WorkAttemptFailed) == []
    assert [e.work_id for e in log.of(WorkStarted)] == ["w-tr"]


async def test_a_batch_that_never_arrives_fails_the_attempt_naming_it_without_starting_the_job(
        nats_url: str, tmp_path: Path, eventually) -> None:
    config = RrConfig(worker=worker_settings(tmp_path, templates={"training": READ_ALL}, data_wait_s=1.0))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        await sched.elected(3)
        async with worker_running(nats_url, NODE, config):
            await sched.add("w-tr", "training", data="/elsewhere/b1.npz", input_batches="b1")
            await sched.assign("w-tr", NODE)
            await eventually(lambda: log.of(WorkAttemptFailed), timeout=60, message="the attempt failed")
    [failed] = log.of(WorkAttemptFailed)
    assert "not on this node" in failed.reason and "/elsewhere/b1.npz" in failed.reason and "worker.data_wait_s" in failed.reason
    assert log.of(WorkStarted) == []
