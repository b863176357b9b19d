"""The operations files are real: systemd units restart forever and come back after a reboot, and the
nats-server configs in ops/nats pass `nats-server -t` and run a 3-node TLS cluster with the generated users."""

from __future__ import annotations

import configparser
import contextlib
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from cli.auth.generate import generate
from eventbus.connection import connect
from eventbus.errors import BusUnavailable
from eventbus.events import WorkStarted
from eventbus.natsserver import find_binary, free_ports
from eventbus.publisher import Publisher
from eventbus.streams import EVENTS_STREAM, StreamSettings, provision
from servicekit.auth.credentials import connect_options, load_credentials
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "ops"
NODES = ("a", "b", "c")


def unit(name: str) -> configparser.ConfigParser:
    """A systemd unit file parsed as INI (repeated keys allowed, `%i` and `$MAINPID` left alone)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(OPS / "systemd" / name)
    return parser


@pytest.mark.parametrize("name", ["rr-service@.service", "rr-nats.service"])
def test_units_restart_forever_and_start_at_boot_after_the_network(name: str) -> None:
    parsed = unit(name)
    assert parsed["Service"]["Restart"] == "always"
    assert parsed["Service"]["RestartSec"] == "5"
    assert parsed["Unit"]["StartLimitIntervalSec"] == "0"  # never gives up
    assert parsed["Unit"]["After"] == "network-online.target" and parsed["Unit"]["Wants"] == "network-online.target"
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


def test_the_service_template_runs_the_named_service_with_the_nodes_environment() -> None:
    service = unit("rr-service@.service")["Service"]
    assert service["ExecStart"].endswith("rr-service %i")
    assert service["EnvironmentFile"] == "/etc/rr/rr.env"
    assert service["ExecStartPre"].endswith("python -m cli.doctor.deps")
    env = (OPS / "systemd" / "rr.env.example").read_text()
    for key in ("RR_NATS_URL", "RR_NODE_ID", "RR_CONFIG", "RR_NATS_CREDS"):
        assert re.search(rf"^{key}=\S+", env, re.MULTILINE), key


def test_the_three_node_configs_differ_only_in_their_name() -> None:
    def body(n: str) -> str:
        lines = (OPS / "nats" / f"node-{n}.conf").read_text().splitlines()
        return "\n".join(line.replace(f'"nats-{n}"', '"nats-X"') for line in lines if not line.startswith("#"))

    assert body("a") == body("b") == body("c")
    assert 'server_name: "nats-b"' in (OPS / "nats" / "node-b.conf").read_text()


@pytest.mark.parametrize("name", ["single.conf", "node-a.conf"])
def test_every_server_config_fsyncs_each_write(name: str) -> None:
    text = (OPS / "nats" / name).read_text()
    block = text[text.index("jetstream {"):]
    assert re.search(r"^\s*sync_interval: always$", block[: block.index("}")], re.MULTILINE)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ops/nats installed under a temp /etc/rr: dev certificates, generated users, loopback ports."""
    root = tmp_path_factory.mktemp("etc-rr")
    subprocess.run([str(OPS / "tls" / "make-dev-certs.sh"), str(root / "tls")], check=True, capture_output=True, timeout=60)
    hosts = root / "hosts.yaml"
    hosts.write_text("hosts:\n  coord-1: {role: coordinator}\n  gpu-1: {role: selfplay}\np2p_voters: [coord-1]\n")
    generate(hosts, root / "nats", tls_ca=str(root / "tls" / "ca.pem"))
    client, cluster, http = (free_ports(3) for _ in range(3))
    for i, n in enumerate(NODES):
        text = (OPS / "nats" / f"node-{n}.conf").read_text()
        text = text.replace("/etc/rr/tls/", f"{root}/tls/").replace("/var/lib/rr-nats/", f"{root}/store-{n}/")
        text = text.replace('"0.0.0.0:4222"', f'"127.0.0.1:{client[i]}"').replace('"0.0.0.0:8222"', f'"127.0.0.1:{http[i]}"')
        text = text.replace('"0.0.0.0:6222"', f'"127.0.0.1:{cluster[i]}"').replace("max_file_store: 200GB", "max_file_store: 4GB")
        for j, m in enumerate(NODES):
            text = text.replace(f"nats-{m}.rr.internal:6222", f"127.0.0.1:{cluster[j]}")
        (root / "nats" / f"node-{n}.conf").write_text(text)
        (root / "nats" / f"node-{n}.url").write_text(f"tls://127.0.0.1:{client[i]} http://127.0.0.1:{http[i]}")
    single = (OPS / "nats" / "single.conf").read_text().replace("/etc/rr/tls/", f"{root}/tls/")
    (root / "nats" / "single.conf").write_text(single.replace("/var/lib/rr-nats/", f"{root}/store-single/"))
    return root


@pytest.mark.parametrize("name", ["single.conf", "node-a.conf", "node-b.conf", "node-c.conf"])
def test_nats_server_accepts_each_config(installed: Path, name: str) -> None:
    result = subprocess.run([find_binary(), "-t", "-c", str(installed / "nats" / name)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_cluster(installed: Path) -> Iterator[list[str]]:
    """The three configured servers, started and JetStream-healthy; their client URLs."""
    logs = [open(installed / f"node-{n}.log", "wb") for n in NODES]  # noqa: SIM115 - closed below
    procs = [subprocess.Popen([find_binary(), "-c", str(installed / "nats" / f"node-{n}.conf")], stdout=log,
                              stderr=subprocess.STDOUT) for n, log in zip(NODES, logs)]
    urls = [(installed / "nats" / f"node-{n}.url").read_text().split() for n in NODES]
    try:
        deadline = time.monotonic() + 30
        while not all(_healthy(http) for _client, http in urls):
            assert time.monotonic() < deadline, "cluster not healthy within 30 s"
            assert all(p.poll() is None for p in procs), "a server exited"
            time.sleep(0.1)
        yield [client for client, _http in urls]
    finally:
        for proc in procs:
            proc.kill()  # a throwaway store: no need to wait out a graceful shutdown
        for proc in procs:
            proc.wait(30)
        for log in logs:
            log.close()


async def test_the_cluster_configs_run_r3_streams_over_tls_with_the_generated_users(installed: Path) -> None:
    creds = installed / "nats" / "credentials"
    with running_cluster(installed) as urls:
        admin = await connect(urls, node_id="admin", **connect_options(load_credentials(creds / "admin.yaml")))
        try:
            # A cluster that has just formed may need longer than one JetStream request's 5 s to place
            # the first R3 stream on a loaded machine; provisioning is idempotent, so it is asked again.
            settings = StreamSettings(replicas=3, events_max_gib=0.5, deadletter_max_gib=0.1)
            await eventually(lambda: provision(admin.js, settings), timeout=60, interval=1,
                             message="the cluster's JetStream placed the R3 streams")
            worker = await connect(urls[1], node_id="gpu-1", **connect_options(load_credentials(creds / "gpu-1.yaml")))
            try:
                published = await Publisher(worker).publish(WorkStarted(work_id="w-1", node="gpu-1", attempt=1, pid=7))
            finally:
                await worker.close()
            info = await admin.js.stream_info(EVENTS_STREAM)
            assert info.config.num_replicas == 3 and info.state.messages == 1 and published.seq == 1
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        finally:
            await admin.close()
        untrusted = msgspec.structs.replace(load_credentials(creds / "gpu-1.yaml"), tls_ca=None)
        with pytest.raises(BusUnavailable, match="TLS certificate is not trusted.*set tls_ca"):  # the dev CA is not in the system store
            await connect(urls[0], node_id="gpu-1", **connect_options(untrusted))
