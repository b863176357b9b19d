"""A `sync` work item end to end: `rr work add`, the scheduler assigns it, the target's sync service serves it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cli.main import main as rr
from config.sections.scheduler import SchedulerSettings
from config.settings import load_config
from eventbus.connection import Bus
from eventbus.events import HostOnline, SelfplayComplete, WorkAdded, WorkAttemptFailed, WorkCompleted, WorkStarted
from eventbus.history import events
from eventbus.publisher import Publisher
from services.leader.syncplan import sync_planner_loop
from tests.bus_harness import provisioned_bus
from tests.leader_harness import leader_loop_running
from tests.procs.dist_fleet import Fleet, ServiceProcess, wait_for, write_node_config
from tests.scheduler_harness import run_scheduler, stop
from tests.terms import as_term
from tests.test_sync import LEADER, received, write_batch

pytestmark = pytest.mark.timeout(120)

# No node trains: nothing but the sync item copies a batch.
HOSTS = """
hosts:
  n1: {role: selfplay, gpu: "RTX 4060 8GB"}
  n2: {role: selfplay, gpu: "RTX 4060 8GB"}
"""


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with provisioned_bus(nats_url, node_id=LEADER) as connected:  # as the leader the loops run under
        yield connected


async def hosts_online(bus: Bus, tmp_path: Path, *nodes: str) -> tuple[Publisher, Path]:
    """The hosts file and `nodes` online; the leader's publisher."""
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    publisher = Publisher(bus)
    for node in nodes:
        await as_term(publisher, HostOnline(node=node))
    return publisher, hosts


async def add_sync_item(nats_url: str, batch_id: str, target: str = "n2") -> None:
    """Queue a sync item as an operator does, with `rr work add`."""
    argv = ["work", "add", "--type", "sync", "--board", "hex8", "--players", "2", "--target", target,
            "--param", f"batch_id={batch_id}", "--nats", nats_url]
    assert await asyncio.to_thread(rr, argv) == 0


async def work_events(bus: Bus, work_id: str) -> list[object]:
    return [e async for _s, e in events(bus, subject=f"rr.evt.work.{work_id}.>")]


async def test_a_sync_item_added_like_rr_work_add_completes_with_the_batch_on_its_target(
    bus: Bus, nats_url: str, tmp_path: Path
) -> None:
    publisher, hosts = await hosts_online(bus, tmp_path, "n1", "n2")
    ref = write_batch(tmp_path / "n1" / "selfplay" / "b1.npz", 300_000)
    await publisher.publish(SelfplayComplete(batch_id="b1", work_id="w-b1", node="n1", board_type="hex8", num_players=2,
                                             num_games=8, data=ref))
    with Fleet() as fleet:
        configs = {n: write_node_config(tmp_path / f"{n}.yaml", tmp_path / n, hosts_file=hosts) for n in ("n1", "n2")}
        for node, config in configs.items():
            fleet.add(ServiceProcess("sync", nats_url, node, config, tmp_path))
        scheduler = await run_scheduler(bus, SchedulerSettings())
        try:
            async with leader_loop_running(bus, sync_planner_loop, load_config(configs["n1"]), node=LEADER,
                                           nats_url=nats_url, config_path=str(configs["n1"])):
                await add_sync_item(nats_url, "b1")
                [added] = [e async for _s, e in events(bus, subject="rr.evt.work.*.WORK_ADDED.*")]
                assert isinstance(added, WorkAdded) and added.work_type == "sync"

                async def completed() -> list[object]:
                    return [e for e in await work_events(bus, added.work_id) if isinstance(e, (WorkCompleted, WorkAttemptFailed))]

                [end] = await wait_for(fleet, completed, 60, "the sync item's end")
        finally:
            await stop(scheduler)
        assert fleet.stop() == [0, 0]
    assert isinstance(end, WorkCompleted) and end.node == "n2", end
    assert received(tmp_path, "n2", "b1", ref.sha256)
    assert [str(o.path) for o in end.outputs] == [str(tmp_path / "n2" / "data" / "sync" / "hex8_2p" / "b1.npz")]
    started = [e for e in await work_events(bus, added.work_id) if isinstance(e, WorkStarted)]
    assert [(e.node, e.attempt) for e in started] == [("n2", 1)]


async def test_a_sync_item_for_an_unknown_batch_fails_its_attempt_with_the_reason(
    bus: Bus, nats_url: str, tmp_path: Path
) -> None:
    _, hosts = await hosts_online(bus, tmp_path, "n2")
    with Fleet() as fleet:
        config = write_node_config(tmp_path / "n2.yaml", tmp_path / "n2", hosts_file=hosts)
        fleet.add(ServiceProcess("sync", nats_url, "n2", config, tmp_path))
        scheduler = await run_scheduler(bus, SchedulerSettings())
        try:
            await add_sync_item(nats_url, "nope")

            async def failed() -> list[object]:
                return [e async for _s, e in events(bus, subject="rr.evt.work.*.WORK_ATTEMPT_FAILED.*")]

            [end] = await wait_for(fleet, failed, 60, "the failed attempt")
        finally:
            await stop(scheduler)
        assert fleet.stop() == [0]
    assert isinstance(end, WorkAttemptFailed) and end.node == "n2" and "'nope' is not in the log" in end.reason
