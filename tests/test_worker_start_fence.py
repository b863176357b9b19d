"""A worker's WORK_STARTED is stored only while the assignment it answers is still its item's newest event.

ops/chaos (seed 17) found an item completed twice: a worker cut off mid-job had its attempt handed
back and was assigned the next attempt on its return; the first attempt's completion was stored
after the worker had judged the new assignment, and the new attempt started and completed anyway.
Here the worker judges attempt 2 while its only slot is busy, the late completion of attempt 1 is
stored, then the slot frees: the server refuses attempt 2's WORK_STARTED and the worker drops it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from config.settings import RrConfig
from eventbus.events import WorkAdded, WorkCompleted, WorkHandedBack, WorkProgress, WorkStarted
from eventbus.publisher import Publisher
from services.worker.protocol import started_fence
from services.worker.records import read_records
from tests.bus_harness import provisioned_bus
from tests.procs.worker_harness import Scheduler, watching, worker_running, worker_settings

NODE = "gpu-1"
# Waits until the test opens its gate, then exits 0 (a job that prints no result completes with no domain event).
GATED = '{python} -c "import os, sys, time; [time.sleep(0.05) for _ in iter(lambda: os.path.exists(sys.argv[1]), True)]" {gate}'


def held(tmp_path: Path) -> set[tuple[str, int]]:
    """The attempts the worker holds (recorded when it accepts one, before it waits for a slot)."""
    records = tmp_path / "data" / "worker" / NODE / "running.json"
    return {(r.work_id, r.attempt) for r in read_records(records)} if records.exists() else set()


async def run_attempt_2_after(nats_url: str, tmp_path: Path, eventually, late_report: str) -> list:
    """Attempt 1 of w-late ran on this node before; attempt 2 is judged, then `late_report` of attempt 1 is stored,
    then attempt 2 gets a slot. Returns the log's events of w-late."""
    block_gate, open_gate = tmp_path / "block", tmp_path / "open"
    open_gate.touch()  # attempt 2's job would complete at once
    config = RrConfig(worker=worker_settings(tmp_path, templates={"selfplay": GATED}, max_parallel_jobs=1))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched, cut_off = Scheduler(bus), Publisher(bus)
        await sched.elected(7)
        # Attempt 1 started on this node before the worker was cut off (its consumer delivers only newer events).
        await sched.add("w-late", gate=str(open_gate))
        await sched.assign("w-late", NODE, attempt=1)
        first = await cut_off.publish(WorkStarted(work_id="w-late", node=NODE, attempt=1, source=NODE))
        async with worker_running(nats_url, NODE, config):
            await sched.add("w-block", gate=str(block_gate))
            await sched.assign("w-block", NODE)
            await eventually(lambda: log.of(WorkStarted, work_id="w-block"), timeout=30, message="the slot taken")
            # The leader saw the node offline: attempt 1 handed back, attempt 2 assigned to it on its return.
            await sched.publisher.publish(WorkHandedBack(work_id="w-late", node=NODE, attempt=1, reason="node offline"))
            await sched.assign("w-late", NODE, attempt=2)
            await eventually(lambda: ("w-late", 2) in held(tmp_path), timeout=30, message="attempt 2 judged and queued")
            if late_report == "completion":  # as the cut-off worker publishes it: fenced on attempt 1's start
                await cut_off.publish(WorkCompleted(work_id="w-late", node=NODE, attempt=1, source=NODE),
                                      fence=started_fence("w-late", first.seq))
            else:
                await cut_off.publish(WorkProgress(work_id="w-late", node=NODE, attempt=1, fraction=0.9, source=NODE))
            block_gate.touch()
            await eventually(lambda: not held(tmp_path), timeout=30, message="the worker holds nothing")
        marker = await sched.add("w-marker")  # stored after anything the worker stored: once seen, the log is complete
        await eventually(lambda: log.of(WorkAdded, work_id=marker.work_id), timeout=10, message="the marker in the log")
        return [e for _, e in log.records if getattr(e, "work_id", None) == "w-late"]


async def test_an_attempt_does_not_start_once_a_late_completion_of_an_older_one_is_stored(
        nats_url: str, tmp_path: Path, eventually, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.worker")
    events = await run_attempt_2_after(nats_url, tmp_path, eventually, late_report="completion")
    assert [(e.attempt, e.node) for e in events if isinstance(e, WorkCompleted)] == [(1, NODE)]
    assert [e.attempt for e in events if isinstance(e, WorkStarted)] == [1]
    assert "w-late attempt 2 not started" in caplog.text and "item already completed" in caplog.text


async def test_an_attempt_starts_when_only_a_report_of_an_older_attempt_came_in_between(
        nats_url: str, tmp_path: Path, eventually, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.worker")
    events = await run_attempt_2_after(nats_url, tmp_path, eventually, late_report="progress")
    assert [e.attempt for e in events if isinstance(e, WorkStarted)] == [1, 2]
    assert [e.attempt for e in events if isinstance(e, WorkCompleted)] == [2]
    assert "trying again after seq" in caplog.text  # the first try was refused by the fence
