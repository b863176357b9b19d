"""A node's first worker runs what the leader assigned to the node before the worker ever started.

The leader assigns to a node from its agent's first beat (HOST_ONLINE); a worker first started
after that used to create its assignments durable at the log's end and never hear those.
"""

from __future__ import annotations

from pathlib import Path

from config.settings import RrConfig
from eventbus.consumer import EventConsumer
from eventbus.events import HostOffline, HostOnline, WorkCompleted, WorkStarted
from eventbus.publisher import Publisher
from eventbus.streams import EVENTS_STREAM
from services.worker.firststart import membership_start
from services.worker.service import assignments_spec
from tests.bus_harness import provisioned_bus
from tests.procs.worker_harness import Scheduler, watching, worker_running, worker_settings

NODE = "gpu-1"


async def test_a_worker_first_started_after_its_node_came_online_runs_the_assignments_made_before(
        nats_url: str, tmp_path: Path, eventually) -> None:
    config = RrConfig(worker=worker_settings(tmp_path, templates={"chore": "true"}))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched, publisher = Scheduler(bus), Publisher(bus)
        await sched.elected(7)
        # An earlier membership: its attempt was the leader's to end when the node went offline.
        await publisher.publish(HostOnline(node=NODE))
        await sched.add("w-earlier", "chore")
        await sched.assign("w-earlier", NODE)
        await publisher.publish(HostOffline(node=NODE, reason="no heartbeat"))
        # The agent beats before the worker ever ran: the node is online and gets work at once.
        await publisher.publish(HostOnline(node=NODE, reason="recovered"))
        for work_id in ("w-first", "w-other"):
            await sched.add(work_id, "chore")
        await sched.assign("w-first", NODE)
        await sched.assign("w-other", "gpu-2")
        async with worker_running(nats_url, NODE, config):
            await eventually(lambda: log.of(WorkCompleted, work_id="w-first"), timeout=20, message="w-first ran")
        # A restart resumes the durable where it stopped: nothing runs twice.
        async with worker_running(nats_url, NODE, config):
            await sched.add("w-later", "chore")
            await sched.assign("w-later", NODE)
            await eventually(lambda: log.of(WorkCompleted, work_id="w-later"), timeout=20, message="w-later ran")
    assert [e.work_id for e in log.of(WorkStarted)] == ["w-first", "w-later"]


async def test_a_worker_durable_made_before_keeps_its_start_and_position(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="sched") as bus:
        spec = assignments_spec(NODE)
        await EventConsumer(bus, spec, {}).ensure()  # as a worker made it before: only what came after
        sched = Scheduler(bus)
        await sched.add("w-1", "chore")
        await sched.assign("w-1", NODE)

        async def never() -> int:
            raise AssertionError("the start of an existing durable is not computed again")

        await EventConsumer(bus, spec, {}, first_start=never).ensure()
        info = await bus.js.consumer_info(EVENTS_STREAM, spec.durable)
        assert info.num_pending == 1 and info.delivered.stream_seq == 0


async def test_a_node_never_online_starts_past_the_log_and_another_nodes_online_is_not_its_own(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="sched") as bus:
        sched, publisher = Scheduler(bus), Publisher(bus)
        await sched.add("w-1", "chore")
        await sched.assign("w-1", "gpu-2")
        other = await publisher.publish(HostOnline(node="gpu-2"))
        assert await membership_start(bus, NODE) == other.seq + 1  # nothing of the log before it is replayed
        mine = await publisher.publish(HostOnline(node=NODE))
        await sched.assign("w-1", NODE, attempt=2)
        assert await membership_start(bus, NODE) == mine.seq
