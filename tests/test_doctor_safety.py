"""`rr doctor` catches what bit a fresh install: a missing workload package, a data dir kept locked by a killed
`rr up`'s leftovers, a stalled history read, a leadership that keeps changing; it checks the data dir `rr up`
uses and leaves out advice meant for production servers when it looks at an embedded `rr up`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import msgspec
import pytest

from cli.doctor.checks import check_data_dir_lock, check_history, check_leadership, evaluate, passed
from cli.doctor.findings import DataDirLockProbe, HistoryProbe, LeadershipProbe, MonitorProbe
from cli.doctor.probes import Target, probe_data_lock, probe_history, probe_leadership
from cli.doctor.target import build_target
from cli.up.lock import LOCK_NAME, UP_OWNER, LockOwner, lock_up
from eventbus.connection import Bus
from eventbus.events import HostOnline, LeaderElected
from eventbus.natsserver import NatsServer
from eventbus.publisher import Publisher
from servicekit.options import CommonOptions
from tests.bus_harness import provisioned_bus
from tests.helpers import pythonpath_without
from tests.test_doctor import by_name, healthy
from tests.test_up import PROJECT_ROOT, _env

LOCK = "/var/lib/rr/rr.lock"

# ---- verdicts, pure ------------------------------------------------------------------------


def test_a_free_data_dir_or_one_held_by_running_rr_processes_passes() -> None:
    free = check_data_dir_lock(DataDirLockProbe(path=LOCK))
    assert free.ok and free.detail == f"free: no rr up or rr service holds {LOCK}"
    up = check_data_dir_lock(DataDirLockProbe(path=LOCK, pids=[12], alive=[12], owners=["rr up pid 12"]))
    assert up.ok and up.detail == f"in use by rr up pid 12 ({LOCK})"


def test_a_lock_kept_by_what_a_killed_rr_up_left_behind_fails_naming_them() -> None:
    left = check_data_dir_lock(DataDirLockProbe(path=LOCK, pids=[12], keepers=["nats-server pid 14", "rr-service worker pid 15"]))
    assert not left.ok and left.required
    assert "holder (pid 12) has exited; still open in nats-server pid 14, rr-service worker pid 15" in left.detail
    assert f"fuser -v {LOCK}" in left.fix
    assert not passed(evaluate(healthy(data_lock=DataDirLockProbe(path=LOCK, pids=[12]))))


def test_a_stalled_history_read_fails() -> None:
    done = check_history(HistoryProbe(wanted=1000, limit_s=10, read=1000, seconds=0.04))
    assert done.ok and done.detail == "the newest 1000 events of RR_EVENTS in 0.04s"
    stalled = check_history(HistoryProbe(wanted=1000, limit_s=10, read=37, seconds=10.0, error="not complete within 10s"))
    assert not stalled.ok and stalled.required
    assert stalled.detail.startswith("stalled: 37 of the newest 1000 events of RR_EVENTS read in 10.0s (not complete within 10s)")
    assert "corrupt" in stalled.fix and "nats-server.log" in stalled.fix
    assert not passed(evaluate(healthy(history=HistoryProbe(wanted=10, limit_s=1, error="not complete within 1s"))))


def test_a_leadership_that_keeps_changing_fails_naming_the_role() -> None:
    calm = check_leadership(LeadershipProbe(window_s=600, elections={"scheduler": 2, "sync": 6}), max_elections=6)
    assert calm.ok and calm.detail == "elections in the last 10 min: scheduler 2, sync 6"
    churn = check_leadership(LeadershipProbe(window_s=600, elections={"scheduler": 61, "sync": 1}), max_elections=6)
    assert not churn.ok and churn.required
    assert churn.detail == ("leadership keeps changing: elections in the last 10 min: scheduler 61, sync 1 "
                            "(more than 6 for scheduler)")
    assert "LEADER_LOST" in churn.fix
    unread = check_leadership(LeadershipProbe(window_s=600, error="not complete within 10s"), max_elections=6)
    assert not unread.ok


def test_an_embedded_rr_up_gets_no_production_durability_advice() -> None:
    production = evaluate(healthy(monitor=None))
    assert not by_name(production, "durability").ok  # unknown: a warning for a real server
    embedded = evaluate(healthy(monitor=None, embedded=True))
    assert "durability" not in {r.name for r in embedded}
    assert passed(embedded)
    default_sync = MonitorProbe(url="http://x:8222", reachable=True, sync_always=False, sync_interval_s=120.0)
    assert "durability" not in {r.name for r in evaluate(healthy(monitor=default_sync, embedded=True))}


# ---- the data dir checked is rr up's ----------------------------------------------------------


def _target(tmp_path: Path, nats_url: str | None = None, data_dir: Path | None = None, **env: str) -> Target:
    options = CommonOptions(nats_url=nats_url, node_id="lap-1", config_path=None)
    return build_target(options, credentials_path="", monitor_url=None, min_free_gib=1, max_skew_s=1,
                        data_dir=data_dir, environ=env, home=tmp_path / "home")


def test_the_data_dir_is_resolved_as_rr_up_resolves_it(tmp_path: Path) -> None:
    assert _target(tmp_path).data_dir == str(tmp_path / "home" / ".local" / "share" / "rr")
    assert _target(tmp_path, XDG_DATA_HOME=str(tmp_path / "xdg")).data_dir == str(tmp_path / "xdg" / "rr")
    assert _target(tmp_path, RR_DATA_DIR=str(tmp_path / "env"), XDG_DATA_HOME="/x").data_dir == str(tmp_path / "env")
    assert _target(tmp_path, data_dir=tmp_path / "flag", RR_DATA_DIR="/env").data_dir == str(tmp_path / "flag")


def test_a_running_rr_up_in_the_data_dir_is_the_server_checked_and_counts_as_embedded(tmp_path: Path) -> None:
    held = lock_up(tmp_path, LockOwner(pid=os.getpid(), owner=UP_OWNER, nats_url="nats://127.0.0.1:4711", embedded=True))
    try:
        target = _target(tmp_path, data_dir=tmp_path)
        assert (target.nats_url, target.embedded, target.monitor_url) == ("nats://127.0.0.1:4711", True, "")
        other = _target(tmp_path, "nats://nats-a:4222", data_dir=tmp_path)
        assert (other.nats_url, other.embedded, other.monitor_url) == ("nats://nats-a:4222", False, None)
        probe = probe_data_lock(tmp_path)
        assert probe.pids == [os.getpid()] and probe.owners == [f"rr up pid {os.getpid()}"]
        assert check_data_dir_lock(probe).ok
    finally:
        held.close()
    assert probe_data_lock(tmp_path) == DataDirLockProbe(path=str(tmp_path / LOCK_NAME))
    # A lock file left by an rr up that has exited names no server to probe.
    (tmp_path / LOCK_NAME).write_bytes(msgspec.json.encode(LockOwner(pid=2**22 + 7, owner=UP_OWNER, nats_url="nats://gone:1")))
    assert _target(tmp_path, data_dir=tmp_path).nats_url == "nats://127.0.0.1:4222"


# ---- real probes ------------------------------------------------------------------------------


async def _publish(bus: Bus, *events: HostOnline | LeaderElected) -> None:
    publisher = Publisher(bus)
    for event in events:
        await publisher.publish(event)


async def test_history_read_completes_and_a_stopped_server_is_reported_as_stalled(nats_server: NatsServer) -> None:
    async with provisioned_bus(nats_server.url) as bus:
        await _publish(bus, *(HostOnline(node=f"n{i}") for i in range(30)))
        done = await probe_history(bus, wanted=20, limit_s=10)
        assert (done.read, done.error) == (20, "")
        assert nats_server.pid is not None
        os.kill(nats_server.pid, signal.SIGSTOP)  # the server stops answering, as a damaged store made it
        try:
            stalled = await probe_history(bus, wanted=20, limit_s=1.0)
        finally:
            os.kill(nats_server.pid, signal.SIGCONT)
    assert stalled.error == "not complete within 1s" and stalled.seconds < 5
    assert not check_history(stalled).ok


async def test_elections_are_counted_per_role_within_the_window(nats_server: NatsServer) -> None:
    async with provisioned_bus(nats_server.url) as bus:
        assert (await probe_leadership(bus, window_s=600, limit_s=10)).elections == {}
        await _publish(bus, *(LeaderElected(role="scheduler", node=f"n{i % 2}") for i in range(8)),
                       LeaderElected(role="sync", node="n1"), HostOnline(node="n1"))
        found = await probe_leadership(bus, window_s=600, limit_s=10)
    assert found == LeadershipProbe(window_s=600, elections={"scheduler": 8, "sync": 1})
    assert not check_leadership(found, max_elections=6).ok


# ---- the whole command ------------------------------------------------------------------------


async def _doctor(*argv: str, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "doctor", *argv, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(**env), cwd=PROJECT_ROOT)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def without_numpy(tmp_path: Path) -> str:
    """A PYTHONPATH under which `import numpy` fails, as in a venv that never installed it."""
    return pythonpath_without(tmp_path / "site", "numpy")


async def test_a_missing_workload_package_fails_rr_doctor(nats_server: NatsServer, tmp_path: Path, without_numpy: str) -> None:
    async with provisioned_bus(nats_server.url):
        pass
    argv = ("--json", "--nats", nats_server.url, "--monitor", "", "--data-dir", str(tmp_path / "data"), "--min-free-gib", "0.001")
    code, out, err = await _doctor(*argv)
    assert code == 0, out + err  # the same node with numpy is ready
    code, out, _err = await _doctor(*argv, PYTHONPATH=without_numpy)
    assert code == 1
    report = json.loads(out)
    assert [c["name"] for c in report["checks"] if not c["ok"] and c["required"]] == ["package numpy"]
    code, _out, err = await _doctor("--deps-only", PYTHONPATH=without_numpy)
    assert code == 1 and "missing Python packages: numpy (numpy)" in err and "-m pip install numpy" in err


async def test_the_units_dependency_gate_refuses_a_node_without_the_workload(without_numpy: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.doctor.deps", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=_env(PYTHONPATH=without_numpy), cwd=PROJECT_ROOT)
    _out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1
    assert "missing Python packages: numpy (numpy)" in err.decode()

