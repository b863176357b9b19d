"""A worker's end of an attempt is stored only while no newer attempt of its item has started (the server checks).

A worker cut off from the cluster finishes its job without learning that the leader handed its
attempt back and another node started the item; when it reconnects, its completion and results
must not be stored beside the newer attempt's (ops/chaos found them stored as late reports).
"""

from __future__ import annotations

from pathlib import Path

from config.settings import RrConfig
from eventbus.events import WorkAdded, WorkCompleted, WorkHandedBack, WorkStarted
from eventbus.publisher import Publisher
from services.worker.records import read_records
from tests.bus_harness import provisioned_bus
from tests.procs.worker_harness import Scheduler, watching, worker_running, worker_settings

NODE = "gpu-1"
# Waits until the test opens its gate, then exits 0 (a job that prints no result completes with no domain event).
GATED = '{python} -c "import os, sys, time; [time.sleep(0.05) for _ in iter(lambda: os.path.exists(sys.argv[1]), True)]" {gate}'


def settled(tmp_path: Path) -> bool:
    """The worker holds no attempt: its end was stored, or refused, and forgotten."""
    records = tmp_path / "data" / "worker" / NODE / "running.json"
    return not records.exists() or read_records(records) == []


async def run_gated(nats_url: str, tmp_path: Path, eventually, newer_start: bool) -> list[WorkCompleted]:
    gate = tmp_path / "gate"
    config = RrConfig(worker=worker_settings(tmp_path, templates={"selfplay": GATED}))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        await sched.elected(7)
        async with worker_running(nats_url, NODE, config):
            await sched.add("w-late", gate=str(gate))
            await sched.assign("w-late", NODE)
            await eventually(lambda: log.of(WorkStarted, work_id="w-late", node=NODE), timeout=30, message="attempt 1 started")
            if newer_start:  # what the leader and another node did while this worker was cut off
                other = Publisher(bus)
                await other.publish(WorkStarted(work_id="w-late", node="gpu-2", attempt=2, source="gpu-2"))
            gate.touch()
            await eventually(lambda: settled(tmp_path), timeout=30, message="the worker settled its attempt's end")
        marker = await sched.add("w-marker")  # stored after anything the worker stored: once seen, the log is complete
        await eventually(lambda: log.of(WorkAdded, work_id=marker.work_id), timeout=10, message="the marker in the log")
        return log.of(WorkCompleted, work_id="w-late", attempt=1)


async def test_an_attempts_completion_is_stored_while_it_is_the_newest_started(nats_url: str, tmp_path: Path, eventually) -> None:
    assert len(await run_gated(nats_url, tmp_path, eventually, newer_start=False)) == 1


async def test_an_attempts_completion_is_refused_once_a_newer_attempt_of_its_item_started(
        nats_url: str, tmp_path: Path, eventually) -> None:
    assert await run_gated(nats_url, tmp_path, eventually, newer_start=True) == []


async def stopped_while_running(nats_url: str, tmp_path: Path, eventually, leader_hands_back: bool) -> list[WorkHandedBack]:
    """A worker stopped while its job runs (a drain); the leader may have handed the attempt back first."""
    config = RrConfig(worker=worker_settings(tmp_path, templates={"selfplay": GATED}))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        await sched.elected(7)
        async with worker_running(nats_url, NODE, config):
            await sched.add("w-drain", gate=str(tmp_path / "never"))
            await sched.assign("w-drain", NODE)
            await eventually(lambda: log.of(WorkStarted, work_id="w-drain", node=NODE), timeout=30, message="attempt 1 started")
            if leader_hands_back:  # the agent's goodbye reached the leader before the worker stopped its job
                await sched.publisher.publish(WorkHandedBack(work_id="w-drain", node=NODE, attempt=1, epoch=7,
                                                             reason=f"node {NODE} went offline"))
        assert settled(tmp_path), "the worker forgets the attempt whose end it published or dropped"
        marker = await sched.add("w-marker")
        await eventually(lambda: log.of(WorkAdded, work_id=marker.work_id), timeout=10, message="the marker in the log")
        return log.of(WorkHandedBack, work_id="w-drain")


async def test_a_stopping_worker_hands_its_running_attempt_back(nats_url: str, tmp_path: Path, eventually) -> None:
    handed = await stopped_while_running(nats_url, tmp_path, eventually, leader_hands_back=False)
    assert [(e.attempt, e.reason) for e in handed] == [(1, "worker stopping")]


async def test_a_stopping_worker_does_not_hand_back_an_attempt_the_leader_already_handed_back(
        nats_url: str, tmp_path: Path, eventually) -> None:
    handed = await stopped_while_running(nats_url, tmp_path, eventually, leader_hands_back=True)
    assert [(e.attempt, e.reason) for e in handed] == [(1, f"node {NODE} went offline")]
