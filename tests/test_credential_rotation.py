"""Rotating or revoking credentials under running services: each one reconnects on its new credentials, or exits non-zero.

A job running on the rotated node keeps running (same pid), no attempt ends, and the node's
heartbeats list it without any jobs_file setting.

Real processes (`rr-service agent`, `rr-service worker`) on a nats-server enforcing the generated
auth block; the server reloads its config (SIGHUP) as an operator's rotation does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cli.auth.generate import generate
from eventbus.connection import Bus, connect
from eventbus.consumerlag import consumer_lag
from eventbus.events import (
    LeaderElected,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCompleted,
    WorkFailed,
    WorkHandedBack,
    WorkStarted,
    utcnow,
)
from eventbus.heartbeats import latest_heartbeats
from eventbus.history import events
from eventbus.natsserver import NatsServer, ServerSpec, free_port
from eventbus.publisher import Publisher
from eventbus.streams import EVENTS_STREAM, StreamSettings, provision
from servicekit.auth.credentials import connect_options, load_credentials
from servicekit.auth.permissions import node_consumer
from tests.procs.services import spawn_service

pytestmark = pytest.mark.timeout(150)

HOSTS = """
hosts:
  coord-1: {status: ready, role: coordinator}
  gpu-1: {status: ready, role: selfplay}
  gpu-2: {status: ready, role: selfplay}
p2p_voters: [coord-1]
"""
REVOKED = HOSTS.replace("gpu-2: {status: ready", "gpu-2: {status: disabled")
AUTH_RETRY_S = 4


def spawn(service: str, node: str, url: str, out: Path, config: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    return spawn_service(service, node, url, config, tmp_path / f"{service}-{node}.log",
                         RR_NATS_CREDS=str(out / "credentials" / f"{node}.yaml"))


def reload_auth(server: NatsServer, out: Path) -> None:
    server.reload(msgspec.structs.replace(server.spec, extra_config=(out / "auth.conf").read_text()))


async def beats_after(admin: Bus, node: str, since: float) -> bool:
    beats = await latest_heartbeats(admin, idle_timeout=1)
    return any(b.beat.node == node and b.stored_at.timestamp() > since for b in beats)


async def start_job(admin: Bus, out: Path, url: str, eventually: Any) -> int:
    """Assign a long job to gpu-1 as coord-1 leading epoch 1 would; its pid once WORK_STARTED says it runs."""
    coord = await connect(url, node_id="coord-1", **connect_options(load_credentials(out / "credentials" / "coord-1.yaml")))
    try:
        leader = Publisher(coord)
        await leader.publish(LeaderElected(role="scheduler", node="coord-1", ttl_s=3, epoch=1))
        await Publisher(admin).publish(WorkAdded(work_id="w-rot", work_type="selfplay", board_type="hex8", num_players=2))
        deadline = utcnow() + dt.timedelta(hours=1)
        await leader.publish(WorkAssigned(work_id="w-rot", node="gpu-1", attempt=1, deadline=deadline, epoch=1))
    finally:
        await coord.close()

    async def started() -> int | None:
        found = [e async for _, e in events(admin, subject="rr.evt.work.>") if isinstance(e, WorkStarted)]
        return found[0].pid if found else None

    pid: int = await eventually(started, timeout=40, message="w-rot started on gpu-1")
    return pid


async def worker_listens(admin: Bus, node: str) -> bool:
    return await consumer_lag(admin, EVENTS_STREAM, node_consumer("worker", node)) is not None


async def job_in_beats(admin: Bus) -> bool:
    beats = await latest_heartbeats(admin, idle_timeout=1)
    return any(b.beat.node == "gpu-1" and any(j.work_id == "w-rot" for j in b.beat.jobs) for b in beats)


async def test_rotation_reconnects_running_services_and_revocation_makes_them_exit_non_zero(tmp_path: Path, eventually: Any) -> None:
    hosts, out, config = tmp_path / "hosts.yaml", tmp_path / "auth", tmp_path / "rr.yaml"
    hosts.write_text(HOSTS)
    generate(hosts, out)
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import time\ntime.sleep(600)\n")  # a job that runs through the whole test
    config.write_text(f"hosts_file: {hosts}\nnats_auth_retry_s: {AUTH_RETRY_S}\nmembership:\n  heartbeat_interval_s: 0.5\n"
                      f"worker:\n  templates:\n    selfplay: '{{python}} {sleeper}'\n")
    spec = ServerSpec(name="rr-auth", port=free_port(), store_dir=str(tmp_path / "nats" / "jetstream"),
                      extra_config=(out / "auth.conf").read_text())
    with NatsServer(spec) as server:
        admin = await connect(server.url, node_id="admin", **connect_options(load_credentials(out / "credentials" / "admin.yaml")))
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            await provision(admin.js, StreamSettings())
            procs = {"agent-gpu-1": spawn("agent", "gpu-1", server.url, out, config, tmp_path),
                     "worker-gpu-1": spawn("worker", "gpu-1", server.url, out, config, tmp_path),
                     "agent-gpu-2": spawn("agent", "gpu-2", server.url, out, config, tmp_path)}
            started = time.time()
            for node in ("gpu-1", "gpu-2"):
                await eventually(lambda node=node: beats_after(admin, node, started), timeout=40, message=f"{node} beats")
            # A node's first worker takes assignments from the node's newest HOST_ONLINE on (services/worker/firststart.py);
            # no leader runs here to store one, so the assignment below waits for the worker's consumer instead.
            await eventually(lambda: worker_listens(admin, "gpu-1"), timeout=40, message="gpu-1's worker takes assignments")
            pid = await start_job(admin, out, server.url, eventually)

            old = load_credentials(out / "credentials" / "gpu-1.yaml").nkey_seed
            generate(hosts, out, rotate=["gpu-1"])
            assert load_credentials(out / "credentials" / "gpu-1.yaml").nkey_seed != old
            await asyncio.to_thread(reload_auth, server, out)
            for service in ("agent", "worker"):
                log_path = tmp_path / f"{service}-gpu-1.log"
                await eventually(lambda log_path=log_path: "nats: reconnected" in log_path.read_text(), timeout=30,
                                 message=f"gpu-1's {service} reconnected on its rotated credentials")
            reconnected = time.time()
            await eventually(lambda: beats_after(admin, "gpu-1", reconnected), timeout=30, message="gpu-1 beats again")
            assert procs["agent-gpu-1"].poll() is None and procs["worker-gpu-1"].poll() is None
            os.kill(pid, 0)  # the job still runs: the rotation cost it nothing
            ends = [e for _, e in [x async for x in events(admin, subject="rr.evt.work.>")]
                    if isinstance(e, (WorkAttemptFailed, WorkCompleted, WorkFailed, WorkHandedBack))]
            assert ends == []  # no attempt consumed
            await eventually(lambda: job_in_beats(admin), timeout=20, message="gpu-1's beats list its running job")

            hosts.write_text(REVOKED)
            generate(hosts, out)
            await asyncio.to_thread(reload_auth, server, out)
            code = await asyncio.to_thread(procs["agent-gpu-2"].wait, AUTH_RETRY_S + 30)
            log = (tmp_path / "agent-gpu-2.log").read_text()
            assert code == 1, log
            last = log.strip().splitlines()[-1]
            assert last.startswith("rr-service agent: NATS connection closed for good (the server refused this node's credentials")
            assert "Traceback" not in log
            assert procs["agent-gpu-1"].poll() is None and procs["worker-gpu-1"].poll() is None
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            codes = {name: proc.wait(30) for name, proc in procs.items()}
            await admin.close()
        assert codes["agent-gpu-1"] == 0 and codes["worker-gpu-1"] == 0, codes
