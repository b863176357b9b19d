"""Scheduler faults with real processes: a node killed mid-job, the scheduler leader killed mid-burst."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventbus.connection import Bus
from eventbus.events import (
    HostOffline,
    HostOnline,
    LeaderElected,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCompleted,
    WorkHandedBack,
    WorkStarted,
)
from eventbus.history import events
from eventbus.publisher import Publisher
from eventbus.subjects import type_filter
from projections import work
from tests.bus_harness import stored_count
from tests.procs.leader_fleet import ROOT, Fleet
from tests.scheduler_harness import (
    add_items,
    all_in,
    attempt_violations,
    online,
    read_log,
    simulated_worker,
    stop,
)

pytestmark = pytest.mark.timeout(90)

# Only the assignment loop's behaviour is under test: no populated or pipeline work beside it.
QUIET = "  populator_enabled: false\npipeline:\n  enabled: false\n"


class SimNodes:
    """Simulated nodes (tests/procs/sim_node.py) as OS processes; killed on exit."""

    def __init__(self, url: str, log_dir: Path) -> None:
        self.url, self.log_dir = url, log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str, *flags: str) -> None:
        """Start one node's process."""
        command = [sys.executable, "-m", "tests.procs.sim_node", "--nats", self.url, "--node", node, "--beat-every", "0.2", *flags]
        with open(self.log_dir / f"sim-{node}.log", "ab") as log:
            self.procs[node] = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                                stdout=log, stderr=subprocess.STDOUT)

    def kill(self, node: str) -> None:
        """kill -9 one node and reap it."""
        self.procs[node].kill()
        self.procs[node].wait(10)

    def kill_all(self) -> None:
        """Kill and reap every node still running."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def sim_nodes(nats_url: str, tmp_path: Path) -> Iterator[SimNodes]:
    nodes = SimNodes(nats_url, tmp_path)
    try:
        yield nodes
    finally:
        nodes.kill_all()


async def logged(bus: Bus, kind: type, **match: Any) -> list[Any]:
    return [e for e in await read_log(bus) if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items())]


async def test_a_node_killed_mid_job_goes_offline_and_its_item_completes_once_elsewhere(
    bus: Bus, nats_url: str, tmp_path: Path, sim_nodes: SimNodes, eventually: Any
) -> None:
    config = tmp_path / "rr.yaml"
    config.write_text(
        "leadership:\n  ttl_s: 2\n"
        "membership:\n  heartbeat_interval_s: 0.2\n  missed_beats_offline: 4\n"
        "scheduler:\n  progress_timeout_s: 60\n" + QUIET
    )
    with Fleet(nats_url, ["s1"], config, tmp_path) as fleet:
        sim_nodes.start("doomed", "--hang")
        await eventually(lambda: logged(bus, HostOnline, node="doomed"), timeout=30, message=f"doomed online\n{fleet.logs()}")
        [item] = await add_items(Publisher(bus), 1)
        await eventually(lambda: logged(bus, WorkStarted, work_id=item, node="doomed"), timeout=20, message="started on doomed")
        sim_nodes.start("survivor")
        await eventually(lambda: logged(bus, HostOnline, node="survivor"), timeout=20, message="survivor online")
        await asyncio.to_thread(sim_nodes.kill, "doomed")
        await eventually(lambda: all_in(bus, work.WorkStatus.COMPLETED, [item]), timeout=30, message=fleet.logs())
    log = await read_log(bus)
    assert [e.node for e in log if isinstance(e, HostOffline)] == ["doomed"]
    assert [(e.attempt, e.node, e.reason) for e in log if isinstance(e, WorkHandedBack)] == [(1, "doomed", "node doomed went offline")]
    assert not [e for e in log if isinstance(e, WorkAttemptFailed)], "a node lost is no failed attempt"
    assert [(e.attempt, e.node) for e in log if isinstance(e, WorkAssigned)] == [(1, "doomed"), (2, "survivor")]
    assert [(e.attempt, e.node) for e in log if isinstance(e, WorkCompleted)] == [(2, "survivor")]
    assert attempt_violations(log) == []


async def leader_now(bus: Bus) -> LeaderElected | None:
    found = None
    async for _, event in events(bus, subject="rr.evt.leader.scheduler.LEADER_ELECTED.*"):
        if isinstance(event, LeaderElected):
            found = event
    return found


async def completed_count(bus: Bus) -> int:
    """How many completions the log holds: the server counts them, so polling it costs the burst's workers (in this
    process) nothing, where folding the whole log every quarter second took their loop's time and slowed the burst."""
    return await stored_count(bus, type_filter("WORK_COMPLETED"))


async def test_a_kill_9_of_the_leader_mid_burst_of_1000_loses_no_item_and_never_doubles_an_attempt(
    bus: Bus, nats_url: str, tmp_path: Path, eventually: Any
) -> None:
    config = tmp_path / "rr.yaml"
    config.write_text(
        "leadership:\n  ttl_s: 2\n"
        "membership:\n  heartbeat_interval_s: 60\n"  # the test's nodes never beat: keep them online
        "scheduler:\n  default_max_parallel_jobs: 8\n" + QUIET
    )
    pub = Publisher(bus)
    nodes = ("n1", "n2", "n3", "n4")
    workers = [asyncio.create_task(simulated_worker(bus, n, lambda job: "complete", work_s=0.02)) for n in nodes]
    try:
        with Fleet(nats_url, ["s1", "s2", "s3"], config, tmp_path) as fleet:
            first = await eventually(lambda: leader_now(bus), timeout=30, message=f"a scheduler leader\n{fleet.logs()}")
            await online(pub, *nodes, epoch=first.epoch)  # as its membership loop would declare them
            ids = await add_items(pub, 1000)
            await eventually(lambda: _at_least(bus, 150), timeout=40, interval=0.1, message="a good part done")
            await asyncio.to_thread(fleet[first.node].kill)
            assert await completed_count(bus) < len(ids), "the burst was over before the kill"

            async def successor() -> LeaderElected | None:
                leader = await leader_now(bus)
                return leader if leader is not None and leader.node != first.node else None

            second = await eventually(successor, timeout=20, message=f"a leader after {first.node}\n{fleet.logs()}")
            await eventually(lambda: _at_least(bus, len(ids)), timeout=60, interval=0.25, message=fleet.logs())
            assert await all_in(bus, work.WorkStatus.COMPLETED, ids)
    finally:
        await stop(*workers)
    log = await read_log(bus)
    assert attempt_violations(log) == []
    by_epoch = {e.epoch for e in log if isinstance(e, WorkAssigned)}
    assert {first.epoch, second.epoch} <= by_epoch, "both leaders assigned part of the burst"
    completions = [e.work_id for e in log if isinstance(e, WorkCompleted)]
    assert sorted(completions) == sorted(ids), "every item completed exactly once"


async def _at_least(bus: Bus, count: int) -> bool:
    return await completed_count(bus) >= count
