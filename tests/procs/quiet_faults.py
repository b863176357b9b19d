"""A 40 s quorum loss (2 of 3 servers stopped) under real processes, their log lines counted: a report for
tests/test_quiet_faults.py.

Usage: python -m tests.procs.quiet_faults
On its own 3-server cluster (random loopback ports, stores in a temporary directory) it runs the scheduler leader and
a node's agent and worker as `rr-service` processes, stops two servers for OUTAGE_S, starts them again, waits for the
node to beat again, and prints one JSON line, a `QuietReport`: how many lines each process wrote over the outage and
its recovery, which still run, and whether every ended scheduler term got its LEADER_LOST once the log was back. The
session runs it beside the tests before that one (tests/background_runs.py): the outage passes beside them.
A wait that times out (services never settling, the node never beating again) fails the run with its traceback.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from eventbus.connection import connect
from eventbus.events import LeaderElected, LeaderLost
from eventbus.heartbeats import latest_heartbeats
from eventbus.history import events
from eventbus.natsserver import NatsCluster
from eventbus.streams import StreamSettings, provision
from tests.helpers import eventually
from tests.procs.services import spawn_service
from tests.procs.stoppable import cancelled_by_sigterm

OUTAGE_S = 40  # the README's figure is for a 40 s quorum loss (README, Logging)
SERVICES = (("leader", "c1"), ("agent", "g1"), ("worker", "g1"))
TERMS_WAIT_S = 240  # minutes, not a TTL: see the test's comment where it asserts the terms


class QuietReport(msgspec.Struct, frozen=True, kw_only=True):
    """Per process (`<service>-<node>`): lines written over the outage and its recovery, the first 200 of them, whether it
    still runs; whether every ended scheduler term has its LEADER_LOST, and the leader's log for a failure message."""

    written: dict[str, int]
    excerpts: dict[str, str]
    running: dict[str, bool]
    ended_terms_recorded: bool
    leader_log: str


def lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


async def ended_terms_recorded(bus: Any) -> bool:
    """Every scheduler term but the newest has its LEADER_LOST in the log (and there was more than one)."""
    log = [e async for _, e in events(bus, subject="rr.evt.leader.scheduler.>")]
    elected = [e.epoch for e in log if isinstance(e, LeaderElected)]
    lost = {e.epoch for e in log if isinstance(e, LeaderLost)}
    return len(elected) > 1 and set(elected[:-1]) <= lost


async def outage(cluster: NatsCluster, tmp: Path, procs: dict[str, subprocess.Popen[bytes]]) -> QuietReport:
    """Settle the services, stop two servers for OUTAGE_S, bring them back, count what each process wrote."""
    config = tmp / "rr.yaml"
    config.write_text("streams:\n  replicas: 3\nmembership:\n  heartbeat_interval_s: 1\n")
    urls = ",".join(cluster.urls)
    logs = {f"{s}-{n}": tmp / f"{s}-{n}.log" for s, n in SERVICES}
    bus = await connect(cluster.urls, node_id="observer")
    try:
        await provision(bus.js, StreamSettings(replicas=3))
        for service, node in SERVICES:
            procs[f"{service}-{node}"] = spawn_service(service, node, urls, config, logs[f"{service}-{node}"])

        async def settled() -> bool:
            beats = {b.beat.node for b in await latest_heartbeats(bus, idle_timeout=1)}
            return "g1" in beats and "assigner: epoch" in logs["leader-c1"].read_text()

        await eventually(settled, timeout=120, interval=0.5, message="services running")
        await bus.close()
        before = {name: len(lines(path)) for name, path in logs.items()}
        for i in (1, 2):
            await asyncio.to_thread(cluster.servers[i].stop)
        await asyncio.sleep(OUTAGE_S)  # the fault's duration is the test's subject, not a wait for an event
        for i in (1, 2):
            await asyncio.to_thread(cluster.restart, i)
        bus = await connect(cluster.urls, node_id="observer")
        back = time.time()

        async def beating_again() -> bool:
            beats = await latest_heartbeats(bus, idle_timeout=1)
            return any(b.beat.node == "g1" and b.stored_at.timestamp() > back for b in beats)

        await eventually(beating_again, timeout=120, interval=0.5, message="g1 beats again after the outage")
        written = {name: lines(path)[before[name]:] for name, path in logs.items()}
        running = {name: proc.poll() is None for name, proc in procs.items()}
        try:
            await eventually(lambda: ended_terms_recorded(bus), timeout=TERMS_WAIT_S, interval=0.5)
            recorded = True
        except AssertionError:
            recorded = False
        return QuietReport(written={n: len(w) for n, w in written.items()}, excerpts={n: "\n".join(w[:200]) for n, w in written.items()},
                           running=running, ended_terms_recorded=recorded, leader_log=logs["leader-c1"].read_text(errors="replace"))
    finally:
        await bus.close()


def stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="rr-quiet-faults-") as tmp:
        cluster = NatsCluster.create(Path(tmp) / "cluster", size=3)
        with cluster:
            try:
                report = asyncio.run(cancelled_by_sigterm(outage(cluster, Path(tmp), procs)))
            finally:
                stop(procs)
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
