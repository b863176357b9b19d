"""Membership end to end: agent processes beat, the leader's loop decides online/offline, `rr nodes` shows it.

Agents are separate OS processes (`python -m cli.service_main agent`), stopped with
SIGSTOP, killed, or shut down cleanly; the leader's loop runs here with a plain term.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from cluster.membership.monitor import MembershipMonitor
from config.settings import load_config
from eventbus.connection import Bus, connect
from eventbus.events import Event, HostOffline, HostOnline, utcnow
from eventbus.heartbeats import Heartbeat, latest_heartbeats, publish_heartbeat
from eventbus.history import Record, replay
from eventbus.streams import TELEMETRY_STREAM
from eventbus.tasks import stop_tasks
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext
from tests.bus_harness import provisioned_bus
from tests.lostcancel import LosingACancel, stopped_on_one_cancel

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = 0.3
MISSED = 3
SILENCE = INTERVAL * MISSED
SLACK = 2.0  # for a loaded 2-core machine; the bench measures the real figure

pytestmark = pytest.mark.timeout(60)


class Term(msgspec.Struct, frozen=True):
    """A leadership term as the loop needs it: just an epoch and a role."""

    epoch: int
    role: str = "scheduler"


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  n1: {roles: [selfplay, evaluation]}\n")
    path = tmp_path / "rr.yaml"
    path.write_text(
        f"hosts_file: {hosts}\n"
        f"membership: {{heartbeat_interval_s: {INTERVAL}, missed_beats_offline: {MISSED}, gpu_probe: none}}\n"
    )
    return path


class AgentProcess:
    """One `rr-service agent` process for a node; its output goes to a log file."""

    def __init__(self, url: str, node: str, config: Path, folder: Path) -> None:
        self.argv = [sys.executable, "-m", "cli.service_main", "agent", "--nats", url, "--node-id", node, "--config", str(config)]
        self.log_path = folder / f"agent-{node}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(*self.argv, cwd=ROOT, stdout=out, stderr=out, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def close(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        await self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@contextlib.asynccontextmanager
async def agent(url: str, node: str, config: Path, folder: Path) -> AsyncIterator[AgentProcess]:
    process = AgentProcess(url, node, config, folder)
    await process.start()
    try:
        yield process
    finally:
        await process.close()


@contextlib.asynccontextmanager
async def leader_loop(url: str, config: Path, epoch: int) -> AsyncIterator[MembershipMonitor]:
    """The membership loop of a leader at `epoch`, on its own connection, cancelled on exit."""
    bus = await connect(url, node_id=f"leader-{epoch}")
    ctx = ServiceContext("scheduler", bus, load_config(config), CommonOptions(nats_url=url, node_id=f"leader-{epoch}", config_path=str(config)))
    monitor = MembershipMonitor(ctx, Term(epoch))
    task = asyncio.ensure_future(monitor.run())
    try:
        yield monitor
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        await bus.close()


async def logged(bus: Bus) -> list[Event]:
    """Every event in RR_EVENTS."""
    records: list[Record] = []
    await replay(bus, records.append)
    return [msgspec.json.decode(r.data, type=HostOnline | HostOffline) for r in records]


async def transitions(bus: Bus) -> list[tuple[str, str, str]]:
    return [(e.type_name(), e.node, e.reason) for e in await logged(bus)]


async def wait_transitions(bus: Bus, count: int, eventually, message: str) -> list[Event]:
    async def enough() -> list[Event] | None:
        events = await logged(bus)
        return events if len(events) >= count else None

    return await eventually(enough, timeout=20, interval=0.05, message=message)  # type: ignore[no-any-return]


async def rr_nodes(url: str, config: Path) -> list[dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "nodes", "--json", "--nats", url, "--config", str(config),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)  # type: ignore[no-any-return]


def since(when: dt.datetime | None, start: dt.datetime) -> float:
    assert when is not None
    return (when - start).total_seconds()


async def test_a_stopped_agent_goes_offline_within_the_bound_recovers_and_leaves_cleanly(
    nats_url: str, config_path: Path, tmp_path: Path, eventually
) -> None:
    async with provisioned_bus(nats_url, node_id="test") as bus, leader_loop(nats_url, config_path, epoch=11), \
            agent(nats_url, "n1", config_path, tmp_path) as n1:
        events = await wait_transitions(bus, 1, eventually, "n1 online")
        online = events[0]
        assert isinstance(online, HostOnline) and online.epoch == 11
        assert (online.node, online.reason, online.roles) == ("n1", "first_seen", ["selfplay", "evaluation"])
        assert online.resources is not None and online.resources.cpu_count >= 1 and online.resources.memory_gb > 0

        stopped_at = utcnow()
        n1.signal(signal.SIGSTOP)
        offline = (await wait_transitions(bus, 2, eventually, "n1 offline after SIGSTOP"))[1]
        assert isinstance(offline, HostOffline) and offline.epoch == 11 and offline.reason.startswith("no heartbeat for ")
        assert SILENCE < offline.silence_s < SILENCE + INTERVAL + SLACK
        assert 0 < since(offline.ts, stopped_at) < SILENCE + INTERVAL + SLACK
        assert SILENCE < since(offline.ts, offline.last_seen) < SILENCE + INTERVAL + SLACK  # from n1's last beat

        n1.signal(signal.SIGCONT)
        recovered = (await wait_transitions(bus, 3, eventually, "n1 back after SIGCONT"))[2]
        assert (recovered.type_name(), recovered.reason) == ("HOST_ONLINE", "recovered")

        rows = {r["node"]: r for r in await rr_nodes(nats_url, config_path)}
        n1_row = rows["n1"]
        assert (n1_row["status"], n1_row["beating"], n1_row["roles"]) == ("online", True, ["selfplay", "evaluation"])
        assert n1_row["cpu_count"] >= 1 and n1_row["memory_gb"] > 0 and n1_row["disk_free_gb"] > 0  # type: ignore[operator]
        assert n1_row["last_beat_age_s"] < SILENCE + SLACK and n1_row["loop_lag_s"] is not None  # type: ignore[operator]

        left_at = utcnow()
        n1.signal(signal.SIGTERM)
        assert await n1.wait() == 0, n1.log()
        left = (await wait_transitions(bus, 4, eventually, "n1 left"))[3]
        assert (left.type_name(), left.reason, left.epoch) == ("HOST_OFFLINE", "left", 11)
        assert since(left.ts, left_at) < SILENCE  # at once, not after the silence

        assert await transitions(bus) == [
            ("HOST_ONLINE", "n1", "first_seen"), ("HOST_OFFLINE", "n1", offline.reason),  # type: ignore[attr-defined]
            ("HOST_ONLINE", "n1", "recovered"), ("HOST_OFFLINE", "n1", "left"),
        ]  # nothing but the transitions reaches the forensic log
        telemetry = await bus.js.stream_info(TELEMETRY_STREAM, subjects_filter="rr.tel.hb.>")
        assert (telemetry.state.subjects or {}).get("rr.tel.hb.n1", 0) >= 3  # before the stop, after it, leaving
        rows = {r["node"]: r for r in await rr_nodes(nats_url, config_path)}
        assert (rows["n1"]["status"], rows["n1"]["reason"], rows["n1"]["leaving"]) == ("offline", "left", True)


async def test_a_killed_agent_goes_offline_and_its_restart_is_a_recovery(nats_url: str, config_path: Path, tmp_path: Path, eventually) -> None:
    async with provisioned_bus(nats_url, node_id="test") as bus, leader_loop(nats_url, config_path, epoch=3):
        async with agent(nats_url, "n1", config_path, tmp_path) as n1:
            await wait_transitions(bus, 1, eventually, "n1 online")
            n1.signal(signal.SIGKILL)
            await n1.wait()
            offline = (await wait_transitions(bus, 2, eventually, "n1 offline after kill -9"))[1]
            assert isinstance(offline, HostOffline) and SILENCE < offline.silence_s < SILENCE + INTERVAL + SLACK
        async with agent(nats_url, "n1", config_path, tmp_path):
            await wait_transitions(bus, 3, eventually, "n1 back after a restart")
        assert [t[2] for t in await transitions(bus)][:3] == ["first_seen", offline.reason, "recovered"]


async def test_a_new_leader_rebuilds_from_the_log_and_announces_nothing_already_known(
    nats_url: str, config_path: Path, tmp_path: Path, eventually
) -> None:
    async with provisioned_bus(nats_url, node_id="test") as bus, agent(nats_url, "n1", config_path, tmp_path) as n1:
        await eventually(lambda: latest_heartbeats(bus), message="n1 beating before any leader")
        async with leader_loop(nats_url, config_path, epoch=1) as first:
            await wait_transitions(bus, 1, eventually, "n1 online under the first leader")
            assert first.statistics().stored_beats == 1  # found from RR_TELEMETRY, not only live
        async with leader_loop(nats_url, config_path, epoch=2) as second:
            await eventually(lambda: second.statistics().beats >= 5 and second.statistics().sweeps >= 5, message="second leader judging")
            assert second.state.alive() == {"n1"}
            assert await transitions(bus) == [("HOST_ONLINE", "n1", "first_seen")]  # not announced again
            n1.signal(signal.SIGKILL)
            offline = (await wait_transitions(bus, 2, eventually, "n1 offline under the second leader"))[1]
            assert (offline.type_name(), offline.epoch) == ("HOST_OFFLINE", 2)


async def test_a_leader_stopped_while_it_publishes_a_transition_ends_on_that_one_cancel(
    nats_url: str, config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python 3.11's wait_for, under the publish, returns the ack and drops a cancellation that lands
    # with it; the publishing child then waited on its queue, and the TaskGroup on it, for good.
    async with provisioned_bus(nats_url, node_id="leader-1") as bus:
        ctx = ServiceContext("scheduler", bus, load_config(config_path), CommonOptions(nats_url=nats_url, node_id="leader-1", config_path=None))
        losing = LosingACancel(ctx.publisher.publish)
        monkeypatch.setattr(ctx.publisher, "publish", losing)
        monitor = MembershipMonitor(ctx, Term(1))
        task = asyncio.ensure_future(monitor.run())
        try:
            assert await monitor.wait_judging(15)
            await publish_heartbeat(bus, Heartbeat(node="n1", ts=utcnow(), seq=1, interval_s=INTERVAL))  # n1 comes online
            assert await stopped_on_one_cancel(task, losing), "the membership loop went on after its cancellation"
        finally:
            await stop_tasks([task], 10)  # cancelled again until it ends: a failing loop fails the test, never hangs it
