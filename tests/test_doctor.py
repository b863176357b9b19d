"""`rr doctor`: pure verdicts from probe values (every fix text), then real probes of a healthy and a broken setup."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from cli.auth.generate import generate
from cli.doctor.checks import CheckResult, evaluate, passed
from cli.doctor.deps import WORKER_MODULES, require_dependencies
from cli.doctor.findings import (
    ConfigProbe,
    ConnectionProbe,
    CredentialsProbe,
    DiskProbe,
    GpuProbe,
    MonitorProbe,
    PackageProbe,
    PermissionsProbe,
    Probes,
)
from cli.doctor.probes import Target, gather
from cli.doctor.report import as_json, as_table, build_report
from cli.main import main as rr
from eventbus.connection import connect
from eventbus.natsserver import NatsServer, ServerSpec, free_port
from eventbus.probe import JetStreamProbe, PublishProbe, StreamProbe, parse_server_time
from eventbus.streams import StreamSettings, provision
from servicekit.auth.credentials import connect_options, load_credentials

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
GIB = 1 << 30
STREAMS = ("RR_EVENTS", "RR_TELEMETRY", "RR_DEADLETTER")


def healthy(**changes: object) -> Probes:
    """Probes of a node where everything is as it should be; `changes` break one thing."""
    probes = Probes(
        node_id="gpu-1",
        python=(3, 11, 7),
        packages=[PackageProbe(module=m, distribution=d, required=r, importable=True, version="1.0")
                  for m, d, r in (("nats", "nats-py", True), ("psutil", "psutil", True), ("torch", "torch", False))],
        credentials=CredentialsProbe(path="/etc/rr/nats-credentials.yaml", user="gpu-1", role="worker"),
        connection=ConnectionProbe(url="nats://nats-a:4222", connected=True, server_version="2.15.1"),
        jetstream=JetStreamProbe(enabled=True, streams=3),
        streams=[StreamProbe(name=s, exists=True, replicas=3, current_replicas=3, messages=10,
                             server_time=NOW, sent_at=NOW, round_trip_s=0.002,
                             sources=("KV_rr_leases",) if s == "RR_EVENTS" else ()) for s in STREAMS],
        expected_replicas=3,
        monitor=MonitorProbe(url="http://nats-a:8222", reachable=True, sync_always=True, sync_interval_s=120.0),
        permissions=PermissionsProbe(
            role="worker",
            own_publish=PublishProbe(subject="rr.evt.doctor.probe.WORK_STARTED.gpu-1", outcome="rejected", detail="wrong last sequence"),
            forbidden=[PublishProbe(subject="$KV.rr_leases.rr-doctor-probe", outcome="denied")],
        ),
        disk=DiskProbe(path="/var/lib/rr", free_bytes=100 * GIB, total_bytes=500 * GIB),
        gpu=GpuProbe(torch_cuda=True, devices=["NVIDIA H100"], expected="H100 80GB"),
    )
    return msgspec.structs.replace(probes, **changes)


def by_name(results: list[CheckResult], name: str) -> CheckResult:
    [found] = [r for r in results if r.name == name]
    return found


def test_a_healthy_node_passes_every_check() -> None:
    results = evaluate(healthy())
    assert passed(results)
    assert [r.name for r in results if not r.ok] == []
    assert {"python", "package nats", "nats reachable", "jetstream", "stream RR_EVENTS", "durability", "clock skew",
            "permissions: own events", "permissions: refused $KV.rr_leases.rr-doctor-probe", "disk", "gpu"} <= {r.name for r in results}


def test_a_missing_required_package_fails_with_the_pip_command_and_torch_only_warns() -> None:
    packages = [PackageProbe(module="psutil", distribution="psutil", required=True, importable=False,
                             error="ModuleNotFoundError: No module named 'psutil'"),
                PackageProbe(module="torch", distribution="torch", required=False, importable=False, error="No module named 'torch'")]
    results = evaluate(healthy(packages=packages))
    psutil = by_name(results, "package psutil")
    assert not psutil.ok and psutil.required and "-m pip install psutil" in psutil.fix
    torch = by_name(results, "package torch")
    assert not torch.ok and not torch.required and "-m pip install torch" in torch.fix
    assert not passed(results)
    assert passed(evaluate(healthy(packages=packages[1:])))  # torch alone does not fail a coordinator


def test_an_unreachable_server_says_how_to_start_it_and_skips_what_needs_it() -> None:
    results = evaluate(healthy(connection=ConnectionProbe(url="nats://nats-a:4222", connected=False,
                                                          error="cannot reach NATS at nats://nats-a:4222: connection refused")))
    reach = by_name(results, "nats reachable")
    assert not reach.ok and "systemctl start rr-nats" in reach.fix and "RR_NATS_URL" in reach.fix
    assert not any(r.name.startswith(("stream ", "jetstream", "permissions")) for r in results)


def test_refused_credentials_point_at_rr_nats_creds() -> None:
    refused = ConnectionProbe(url="nats://a:4222", connected=False,
                              error="NATS at nats://a:4222 refused the connection: authorization violation (no credentials were given)")
    fix = by_name(evaluate(healthy(connection=refused, credentials=CredentialsProbe())), "nats reachable").fix
    assert "set RR_NATS_CREDS" in fix
    fix = by_name(evaluate(healthy(connection=refused)), "nats reachable").fix
    assert "rejected /etc/rr/nats-credentials.yaml" in fix and "rr auth gen" in fix


def test_credentials_of_another_node_fail() -> None:
    result = by_name(evaluate(healthy(credentials=CredentialsProbe(path="/c.yaml", user="gpu-2", role="worker"))), "credentials")
    assert not result.ok and "credentials/gpu-1.yaml" in result.fix


def test_missing_streams_and_wrong_replicas_say_which_command_fixes_them() -> None:
    streams = [StreamProbe(name="RR_EVENTS", exists=False),
               StreamProbe(name="RR_TELEMETRY", exists=True, replicas=1, current_replicas=1, server_time=NOW, sent_at=NOW),
               StreamProbe(name="RR_DEADLETTER", exists=True, replicas=3, current_replicas=2)]
    results = evaluate(healthy(streams=streams))
    missing = by_name(results, "stream RR_EVENTS")
    assert not missing.ok and "rr streams init" in missing.fix
    replicas = by_name(results, "stream RR_TELEMETRY")
    assert not replicas.ok and "1 replicas, the config asks for 3" in replicas.detail and "--replicas 3" in replicas.fix
    lagging = by_name(results, "stream RR_DEADLETTER")
    assert not lagging.ok and not lagging.required and "Recover from a lost NATS server" in lagging.fix


def test_a_log_that_does_not_copy_the_lease_bucket_fails_naming_streams_init() -> None:
    streams = [StreamProbe(name="RR_EVENTS", exists=True, replicas=3, current_replicas=3, server_time=NOW, sent_at=NOW)]
    old = by_name(evaluate(healthy(streams=streams)), "stream RR_EVENTS")
    assert not old.ok and old.required and "KV_rr_leases" in old.detail and "rr streams init" in old.fix
    assert by_name(evaluate(healthy()), "stream RR_EVENTS").ok


def test_durability_unknown_or_default_warns_with_the_setting_to_change() -> None:
    unknown = by_name(evaluate(healthy(monitor=MonitorProbe(url="http://a:8222", reachable=False, error="refused"))), "durability")
    assert not unknown.ok and not unknown.required and unknown.detail.startswith("unknown") and "--monitor" in unknown.fix
    default = by_name(evaluate(healthy(monitor=MonitorProbe(url="http://a:8222", reachable=True, sync_interval_s=120.0))),
                      "durability")
    assert not default.ok and default.detail == "sync_interval 120s" and "sync_interval: always" in default.fix


def test_clock_skew_beyond_the_limit_fails_and_varz_is_the_fallback_source() -> None:
    late = [msgspec.structs.replace(s, sent_at=NOW + dt.timedelta(seconds=3)) for s in healthy().streams]
    skew = by_name(evaluate(healthy(streams=late)), "clock skew")
    assert not skew.ok and skew.required and skew.detail.startswith("+3.001s") and "timedatectl set-ntp true" in skew.fix
    no_ts = [msgspec.structs.replace(s, server_time=None) for s in healthy().streams]
    varz = MonitorProbe(url="http://a:8222", reachable=True, sync_always=True, server_now=NOW,
                        sent_at=NOW - dt.timedelta(seconds=0.2), round_trip_s=0.0)
    via_varz = by_name(evaluate(healthy(streams=no_ts, monitor=varz)), "clock skew")
    assert via_varz.ok and via_varz.detail == "-0.200s vs the NATS server (/varz)"
    unknown = by_name(evaluate(healthy(streams=no_ts, monitor=None)), "clock skew")
    assert not unknown.ok and not unknown.required


def test_permissions_the_server_does_not_enforce_fail() -> None:
    lax = PermissionsProbe(
        role="worker",
        own_publish=PublishProbe(subject="rr.evt.doctor.probe.WORK_STARTED.gpu-1", outcome="denied", detail="permissions violation"),
        forbidden=[PublishProbe(subject="$KV.rr_leases.rr-doctor-probe", outcome="rejected", detail="wrong last sequence")],
        shared_inbox_subscribe=True)
    results = evaluate(healthy(permissions=lax))
    own = by_name(results, "permissions: own events")
    assert not own.ok and "rr auth gen" in own.fix and "systemctl reload rr-nats" in own.fix
    kv = by_name(results, "permissions: refused $KV.rr_leases.rr-doctor-probe")
    assert not kv.ok and "install the auth.conf" in kv.fix
    assert not by_name(results, "permissions: refused _INBOX.>").ok


def test_low_disk_old_python_bad_config_and_a_missing_gpu() -> None:
    results = evaluate(healthy(
        python=(3, 10, 12),
        disk=DiskProbe(path="/var/lib/rr", free_bytes=2 * GIB, total_bytes=500 * GIB),
        config=ConfigProbe(path="/etc/rr/rr.yaml", error="/etc/rr/rr.yaml: streams.replicas: Expected `int`, got `str`"),
        gpu=GpuProbe(torch_cuda=False, expected="RTX 4090 24GB"),
    ))
    assert "Python 3.11 or newer" in by_name(results, "python").fix
    disk = by_name(results, "disk")
    assert not disk.ok and "below 10 GiB" in disk.detail and "free space under /var/lib/rr" in disk.fix
    config = by_name(results, "config")
    assert not config.ok and "streams.replicas" in config.detail
    gpu = by_name(results, "gpu")
    assert not gpu.ok and not gpu.required and "NVIDIA driver" in gpu.fix
    cpu = by_name(evaluate(healthy(gpu=GpuProbe(torch_cuda=False))), "gpu")
    assert cpu.ok and cpu.detail.startswith("none: CPU node")


def test_a_node_missing_from_the_hosts_file_warns() -> None:
    result = by_name(evaluate(healthy(config=ConfigProbe(hosts_path="/etc/rr/hosts.yaml", node_in_hosts=False))), "hosts file")
    assert not result.ok and not result.required and "add gpu-1 under hosts" in result.fix


def test_the_report_prints_each_fix_under_its_failure_and_json_round_trips() -> None:
    results = evaluate(healthy(streams=[StreamProbe(name="RR_EVENTS", exists=False)]))
    report = build_report("gpu-1", "nats://a:4222", results)
    table = as_table(report)
    assert "FAIL  stream RR_EVENTS" in table and "fix: run `rr streams init`" in table
    assert table.splitlines()[-1].startswith("NOT ready:")
    decoded = json.loads(as_json(report))
    assert decoded["ok"] is False and {"name", "ok", "detail", "fix", "required"} <= set(decoded["checks"][0])


def test_require_dependencies_exits_with_the_pip_command() -> None:
    with pytest.raises(SystemExit, match=r"missing Python packages: rr_no_such_module .*-m pip install rr_no_such_module"):
        require_dependencies(["rr_no_such_module", "msgspec"])
    require_dependencies()  # everything rr needs is installed here


def test_server_time_parses_nanoseconds() -> None:
    assert parse_server_time("2026-11-24T07:39:13.64138318Z") == dt.datetime(2026, 11, 24, 7, 39, 13, 641383, tzinfo=dt.UTC)
    assert parse_server_time("2026-11-24T07:39:13Z") == dt.datetime(2026, 11, 24, 7, 39, 13, tzinfo=dt.UTC)
    assert parse_server_time(None) is None


# Real probes.

HOSTS = "hosts:\n  coord-1: {role: coordinator}\n  gpu-1: {role: selfplay}\np2p_voters: [coord-1]\n"


class Provisioned(msgspec.Struct, frozen=True):
    url: str
    monitor: str
    creds: Path


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Provisioned]:
    """A production-like server: generated users, monitoring, sync_interval always; nothing provisioned yet."""
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    generate(hosts, tmp_path / "auth")
    spec = ServerSpec(name="rr-doctor", port=free_port(), http_port=free_port(), sync_interval="always",
                      store_dir=str(tmp_path / "nats" / "jetstream"), extra_config=(tmp_path / "auth" / "auth.conf").read_text())
    with NatsServer(spec) as server:
        yield Provisioned(url=server.url, monitor=f"http://127.0.0.1:{spec.http_port}", creds=tmp_path / "auth" / "credentials")


async def provision_as_admin(setup: Provisioned) -> None:
    bus = await connect(setup.url, node_id="admin", **connect_options(load_credentials(setup.creds / "admin.yaml")))
    try:
        await provision(bus.js, StreamSettings())
    finally:
        await bus.close()


def worker_target(setup: Provisioned, tmp_path: Path, **changes: object) -> Target:
    target = Target(nats_url=setup.url, node_id="gpu-1", credentials=load_credentials(setup.creds / "gpu-1.yaml"),
                    credentials_path=str(setup.creds / "gpu-1.yaml"), monitor_url=setup.monitor, data_dir=str(tmp_path),
                    min_free_gib=0.001)
    return msgspec.structs.replace(target, **changes)


async def test_a_provisioned_secured_server_passes_every_check(secured: Provisioned, tmp_path: Path) -> None:
    await provision_as_admin(secured)
    results = evaluate(await gather(worker_target(secured, tmp_path)))
    assert [(r.name, r.detail) for r in results if not r.ok] == []
    assert by_name(results, "durability").detail.startswith("sync_interval: always")
    assert by_name(results, "permissions: own events").detail.startswith("rr.evt.doctor.probe.WORK_STARTED.gpu-1: rejected (wrong last sequence")
    assert by_name(results, "permissions: refused $KV.rr_leases.rr-doctor-probe").detail == "denied (permissions violation)"
    assert by_name(results, "permissions: refused rr.evt.doctor.probe.MODEL_PROMOTED.gpu-1").ok
    assert by_name(results, "permissions: refused $JS.API.STREAM.DELETE.RR_DOCTOR_PROBE").ok
    assert by_name(results, "clock skew").ok
    assert passed(results)


async def test_missing_streams_are_found_with_their_fix(secured: Provisioned, tmp_path: Path) -> None:
    results = evaluate(await gather(worker_target(secured, tmp_path)))
    assert not passed(results)
    for name in STREAMS:
        result = by_name(results, f"stream {name}")
        assert result.detail == "missing" and "rr streams init" in result.fix
    assert by_name(results, "permissions: own events").ok  # no stream answers, but the server let it through


async def test_an_unreachable_url_and_a_plain_server_are_reported_with_fixes(nats_server: NatsServer, tmp_path: Path) -> None:
    gone = Target(nats_url=f"nats://127.0.0.1:{free_port()}", node_id="gpu-1", monitor_url="", data_dir=str(tmp_path))
    reach = by_name(evaluate(await gather(gone)), "nats reachable")
    assert not reach.ok and "cannot reach NATS" in reach.detail and "systemctl start rr-nats" in reach.fix
    plain = Target(nats_url=nats_server.url, node_id="gpu-1", monitor_url=f"http://127.0.0.1:{free_port()}", data_dir=str(tmp_path))
    results = evaluate(await gather(plain))
    durability = by_name(results, "durability")
    assert durability.detail.startswith("unknown") and not durability.required
    assert by_name(results, "stream RR_EVENTS").fix.startswith("run `rr streams init`")


def test_rr_doctor_json_exit_status(secured: Provisioned, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RR_CONFIG", raising=False)
    monkeypatch.setenv("RR_DATA_DIR", str(tmp_path))
    args = ["doctor", "--json", "--nats", secured.url, "--node-id", "gpu-1", "--creds", str(secured.creds / "gpu-1.yaml"),
            "--monitor", secured.monitor, "--min-free-gib", "0.001"]
    assert rr(args) == 1  # no streams yet
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["node"] == "gpu-1"
    assert rr(["doctor", "--deps-only"]) == 0


def test_the_units_dependency_check_names_the_missing_packages_without_importing_rr() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    # psutil and yaml made unimportable; msgspec and nats too: the check must not need them. numpy and torch as
    # well: each is named like the others, and the run is spared importing torch (seconds, and it proves nothing here).
    code = ("import sys, runpy\n"
            "for m in ('psutil', 'yaml', 'msgspec', 'nats', 'numpy', 'torch'): sys.modules[m] = None\n"
            "runpy.run_module('cli.doctor.deps', run_name='__main__')\n")
    broken = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60, check=False)
    assert broken.returncode == 1
    assert "missing Python packages: nats (nats-py)" in broken.stderr
    # litestar imports msgspec; the workload's packages come last
    assert broken.stderr.rstrip().endswith("-m pip install nats-py msgspec PyYAML psutil litestar numpy torch")
    # The healthy case in this process: the same check the units' `python -m cli.doctor.deps` runs, without a second
    # interpreter importing torch (the suite's workload tests import it here anyway).
    require_dependencies(WORKER_MODULES)
