"""`rr up` starts the agent only once this node's worker takes assignments: the leader assigns as soon as the agent beats."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from cli.up.session import start_order
from cli.up.supervisor import ChildSpec, Supervisor
from cli.up.workerready import wait_worker_listening
from eventbus.consumer import EventConsumer
from services.worker.service import assignments_spec
from tests.bus_harness import provisioned_bus
from tests.helpers import eventually

READY = "print('ready', flush=True); import time; time.sleep(60)"


def _child(tmp_path: Path, name: str) -> ChildSpec:
    return ChildSpec(name=name, argv=[sys.executable, "-c", READY], env=dict(os.environ), log_path=tmp_path / f"{name}.log")


async def test_a_child_whose_first_start_waits_is_started_once_the_wait_ends(tmp_path: Path) -> None:
    gate, stopping = asyncio.Event(), asyncio.Event()
    sup = Supervisor([_child(tmp_path, "worker"), _child(tmp_path, "agent")], first_start_after={"agent": gate.wait})
    run = asyncio.ensure_future(sup.run(stopping))
    try:
        await eventually(lambda: "ready" in (tmp_path / "worker.log").read_text(), timeout=30, message="the worker runs")
        assert {s.name: s.pid for s in sup.statistics()}["agent"] is None and not (tmp_path / "agent.log").exists()
        gate.set()
        await eventually(lambda: "ready" in (tmp_path / "agent.log").read_text(), timeout=30, message="the agent runs")
    finally:
        stopping.set()
        await asyncio.wait_for(run, 30)


async def test_a_stop_during_the_wait_ends_it_and_the_child_never_starts(tmp_path: Path) -> None:
    stopping = asyncio.Event()
    sup = Supervisor([_child(tmp_path, "agent")], first_start_after={"agent": asyncio.Event().wait})
    run = asyncio.ensure_future(sup.run(stopping))
    await asyncio.sleep(0.1)
    stopping.set()
    await asyncio.wait_for(run, 10)
    assert sup.statistics()[0].pid is None and not (tmp_path / "agent.log").exists()


async def test_a_wait_that_fails_starts_the_child_anyway(tmp_path: Path) -> None:
    async def unreachable() -> None:
        raise OSError("no NATS there")

    stopping = asyncio.Event()
    sup = Supervisor([_child(tmp_path, "agent")], first_start_after={"agent": unreachable})
    run = asyncio.ensure_future(sup.run(stopping))
    try:
        await eventually(lambda: "ready" in (tmp_path / "agent.log").read_text(), timeout=30, message="the agent runs")
    finally:
        stopping.set()
        await asyncio.wait_for(run, 30)


def test_only_the_agent_waits_and_only_beside_a_worker(tmp_path: Path) -> None:
    both = [_child(tmp_path, name) for name in ("agent", "api", "worker")]
    assert set(start_order(both, "nats://127.0.0.1:1", "n1")) == {"agent"}
    assert start_order(both[:2], "nats://127.0.0.1:1", "n1") == {}


async def test_the_wait_ends_once_the_nodes_worker_consumer_exists(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="lap-w") as bus:
        assert not await wait_worker_listening(nats_url, "lap-w", timeout_s=0.3)  # no worker ever ran here
        waiting = asyncio.ensure_future(wait_worker_listening(nats_url, "lap-w", timeout_s=30))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await EventConsumer(bus, assignments_spec("lap-w"), {}).ensure()  # what the worker does first
        assert await asyncio.wait_for(waiting, 10)
        assert await wait_worker_listening(nats_url, "lap-w", timeout_s=0.3)  # at once when it ran before
