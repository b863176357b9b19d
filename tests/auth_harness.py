"""Test harness for NATS authorization: a fleet's generated credentials and a real nats-server enforcing them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec

from cli.auth.generate import generate
from eventbus.connection import Bus, connect
from eventbus.natsserver import NatsServer, ServerSpec, free_port
from eventbus.probe import PermissionWatch
from servicekit.auth.credentials import NatsCredentials, connect_options, load_credentials
from tests.bus_harness import stored_count as stored_count  # the auth tests import it from here
from tests.helpers import TEST_STORE_LIMIT

HOSTS = """
hosts:
  coord-1: {status: ready, role: coordinator}
  gpu-1: {status: ready, role: selfplay, gpu: 'RTX 4090 24GB'}
  gpu-2: {status: ready, role: selfplay}
  old-3: {status: disabled, role: selfplay}
p2p_voters: [coord-1]
"""


class Fleet(msgspec.Struct, frozen=True):
    """A server running the generated auth block, and where each user's credentials are."""

    url: str
    out: Path

    def creds(self, user: str) -> NatsCredentials:
        return load_credentials(self.out / "credentials" / f"{user}.yaml")


@contextlib.contextmanager
def auth_server(tmp_path: Path, hosts_text: str = HOSTS) -> Iterator[tuple[Fleet, NatsServer]]:
    """Credentials generated from `hosts_text` (in tmp_path/auth), and a JetStream server enforcing them."""
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(hosts_text)
    generate(hosts, tmp_path / "auth")
    spec = ServerSpec(name="rr-auth", port=free_port(), store_dir=str(tmp_path / "nats" / "jetstream"),
                      extra_config=(tmp_path / "auth" / "auth.conf").read_text(), max_file_store=TEST_STORE_LIMIT)
    with NatsServer(spec) as server:
        yield Fleet(url=server.url, out=tmp_path / "auth"), server


async def open_as(fleet: Fleet, user: str, *, node_id: str | None = None, watch: PermissionWatch | None = None,
                  **options: object) -> Bus:
    """A connection with `user`'s credentials (and its node id unless another is given)."""
    return await connect(fleet.url, node_id=node_id or user, error_listener=watch.on_error if watch else None,
                         **connect_options(fleet.creds(user)), **options)


ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def node_services(node: str, services: tuple[str, ...], url: str, auth_out: Path, config: Path,
                        tmp_path: Path) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """`services` of `node` as processes on its own credentials; on exit each must still run, stop on SIGTERM and exit 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RR_NATS_CREDS": str(auth_out / "credentials" / f"{node}.yaml"),
           "RR_DATA_DIR": str(tmp_path / "data")}
    procs = []
    for service in services:
        with open(tmp_path / f"{service}-{node}.log", "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "cli.service_main", service, "--nats", url, "--node-id", node, "--config", str(config)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        yield procs
        assert all(p.poll() is None for p in procs), "a service exited"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in procs]
    logs = "\n".join((tmp_path / f"{s}-{node}.log").read_text() for s in services)
    assert codes == [0] * len(procs), logs


def violations(server: NatsServer) -> list[str]:
    """The permission violations the server logged."""
    return [line for line in server.log_path.read_text().splitlines() if "Violation" in line]
