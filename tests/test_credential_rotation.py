"""Rotating or revoking credentials under running services: each one reconnects on its new credentials, or exits non-zero.

Real processes (`rr-service agent`, `rr-service worker`) on a nats-server enforcing the generated
auth block; the server reloads its config (SIGHUP) as an operator's rotation does.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from eventbus.connection import Bus, connect
from eventbus.heartbeats import latest_heartbeats
from eventbus.natsserver import NatsServer, ServerSpec, free_port
from eventbus.streams import StreamSettings, provision
from services.auth.credentials import connect_options, load_credentials
from services.auth.generate import generate
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


async def test_rotation_reconnects_running_services_and_revocation_makes_them_exit_non_zero(tmp_path: Path, eventually: Any) -> None:
    hosts, out, config = tmp_path / "hosts.yaml", tmp_path / "auth", tmp_path / "rr.yaml"
    hosts.write_text(HOSTS)
    generate(hosts, out)
    config.write_text(f"hosts_file: {hosts}\nnats_auth_retry_s: {AUTH_RETRY_S}\nmembership:\n  heartbeat_interval_s: 0.5\n")
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
                await eventually(lambda: beats_after(admin, node, started), timeout=40, message=f"{node} beats")

            old = load_credentials(out / "credentials" / "gpu-1.yaml").password
            generate(hosts, out, rotate=["gpu-1"])
            assert load_credentials(out / "credentials" / "gpu-1.yaml").password != old
            rotated = time.time()
            await asyncio.to_thread(reload_auth, server, out)
            await eventually(lambda: beats_after(admin, "gpu-1", rotated + 1), timeout=30,
                             message="gpu-1 beats again on its rotated credentials")
            assert procs["agent-gpu-1"].poll() is None and procs["worker-gpu-1"].poll() is None
            assert "reconnected" in (tmp_path / "agent-gpu-1.log").read_text()

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
