"""`rr up`: restart policy and command lines (pure), the supervisor on real processes, and the whole command."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cli.up.diskspace import reservations, shortfall
from cli.up.errors import UpError
from cli.up.layout import Layout, default_data_dir, service_command
from cli.up.policy import ChildHistory, RestartPolicy, after_exit, describe_exit
from cli.up.session import check_port_free, prepare_layout
from cli.up.supervisor import ChildSpec, Supervisor
from config.sections.sync import SyncSettings
from config.settings import RrConfig
from eventbus.connection import connect
from eventbus.events import HostOnline
from eventbus.history import Record, replay
from eventbus.publisher import Publisher
from eventbus.streams import GIB, StreamSettings
from eventbus.streamstate import stream_states
from servicekit.childenv import child_env
from tests.helpers import eventually, mounted_tmpfs

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# ---- pure parts ---------------------------------------------------------------------


def test_quick_crashes_back_off_exponentially_up_to_the_cap() -> None:
    policy = RestartPolicy(base_s=0.5, factor=2.0, cap_s=30.0, stable_after_s=60.0)
    history, delays = ChildHistory(), []
    for _ in range(9):
        history, delay = after_exit(policy, history, uptime_s=1.0)
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert history.restarts == 9


def test_a_child_that_stayed_up_starts_again_from_the_base_delay() -> None:
    policy = RestartPolicy()
    history = ChildHistory(crashes_in_a_row=8, restarts=8)
    history, delay = after_exit(policy, history, uptime_s=policy.stable_after_s + 1)
    assert delay == policy.base_s and history.crashes_in_a_row == 1 and history.restarts == 9


@given(uptimes=st.lists(st.floats(min_value=0, max_value=1000), max_size=40))
def test_restart_delay_always_within_base_and_cap(uptimes: list[float]) -> None:
    policy = RestartPolicy()
    history = ChildHistory()
    for uptime in uptimes:
        history, delay = after_exit(policy, history, uptime)
        assert policy.base_s <= delay <= policy.cap_s


def test_exits_are_described_for_people() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"


def test_the_store_reserves_every_stream_and_the_bounded_buckets_only() -> None:
    sized = RrConfig(streams=StreamSettings(events_max_gib=2.0, context_max_gib=0.5), sync=SyncSettings(store_max_gib=3.0))
    assert [(r.name, r.max_bytes / GIB, r.setting) for r in reservations(sized)] == [
        ("RR_EVENTS", 2.0, "streams.events_max_gib"),
        ("RR_CONTEXT", 0.5, "streams.context_max_gib"),
        ("RR_TELEMETRY", 1.0, "streams.telemetry_max_gib"),
        ("RR_DEADLETTER", 1.0, "streams.deadletter_max_gib"),
        ("data store", 3.0, "sync.store_max_gib"),
    ]
    assert reservations(RrConfig(streams=StreamSettings(storage="memory"))) == []


def test_free_space_short_of_the_reservations_names_need_free_and_the_settings_largest_first() -> None:
    wanted = reservations(RrConfig(streams=StreamSettings(events_max_gib=2.0, context_max_gib=0.5)))  # 4.5 GiB in all
    assert shortfall(wanted, free_bytes=6 * GIB, stored_bytes=0) is None  # 3/4 of 6 GiB is 4.5
    refused = shortfall(wanted, free_bytes=5 * GIB, stored_bytes=0)
    assert refused is not None and refused.startswith("the streams need 4.50 GiB reserved but the data dir's disk has 5.00 GiB free")
    assert refused.endswith("lower streams.events_max_gib=2, streams.telemetry_max_gib=1, streams.deadletter_max_gib=1, "
                            "streams.context_max_gib=0.5 in the config")
    # What a restarted store already holds sits inside its reservations.
    assert shortfall(wanted, free_bytes=5 * GIB, stored_bytes=1 * GIB) is None


def test_data_dir_defaults() -> None:
    home = Path("/home/op")
    assert default_data_dir({}, home) == Path("/home/op/.local/share/rr")
    assert default_data_dir({"XDG_DATA_HOME": "/xdg"}, home) == Path("/xdg/rr")
    assert default_data_dir({"XDG_DATA_HOME": "/xdg", "RR_DATA_DIR": "/srv/rr"}, home) == Path("/srv/rr")
    layout = Layout.under(Path("/srv/rr"))
    assert (layout.store_dir, layout.log_dir) == (Path("/srv/rr/nats"), Path("/srv/rr/logs"))


def test_service_command_line() -> None:
    argv = service_command("/py", "leader", nats_url="nats://127.0.0.1:4222", node_id="gpu-7", config_path=None)
    assert argv == ["/py", "-m", "cli.service_main", "leader", "--nats", "nats://127.0.0.1:4222", "--node-id", "gpu-7"]
    with_config = service_command("/py", "x", nats_url="u", node_id="n", config_path="/etc/rr.yaml")
    assert with_config[-2:] == ["--config", "/etc/rr.yaml"]


def test_a_childs_environment_puts_the_project_first_once() -> None:
    env = child_env({"PYTHONPATH": os.pathsep.join(["/a", "/proj", "/b"]), "HOME": "/h"}, "/proj")
    assert env["PYTHONPATH"] == os.pathsep.join(["/proj", "/a", "/b"]) and env["HOME"] == "/h" and env["PYTHONUNBUFFERED"] == "1"
    assert child_env({}, "/proj")["PYTHONPATH"] == "/proj"
    assert child_env({})["PYTHONPATH"] == str(Path(__file__).resolve().parents[1])  # this checkout


def test_a_taken_port_is_refused_with_the_port_named() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(UpError, match=f"port {port} is in use"):
            check_port_free("127.0.0.1", port)


def test_a_data_dir_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(UpError, match="is not writable"):
        prepare_layout(Layout.under(tmp_path / "afile" / "data"))


# ---- the supervisor on real processes ------------------------------------------------


def _child(tmp_path: Path, name: str, code: str) -> ChildSpec:
    return ChildSpec(name=name, argv=[sys.executable, "-c", code], env=dict(os.environ), log_path=tmp_path / f"{name}.log")


@pytest.fixture
async def stopping() -> AsyncIterator[asyncio.Event]:
    yield asyncio.Event()


async def test_a_crashing_child_is_restarted_and_its_output_logged(tmp_path: Path, stopping: asyncio.Event) -> None:
    sup = Supervisor([_child(tmp_path, "crasher", "print('boom'); raise SystemExit(3)")], policy=RestartPolicy(base_s=0.05, cap_s=0.1))
    run = asyncio.ensure_future(sup.run(stopping))
    try:
        await eventually(lambda: sup.statistics()[0].restarts >= 2, timeout=20, message="restarted twice")
    finally:
        stopping.set()
        await asyncio.wait_for(run, 20)
    assert sup.statistics()[0].last_exit == "exited with code 3"
    log = (tmp_path / "crasher.log").read_text()
    assert log.count("boom") >= 2 and "=== rr up: starting crasher" in log


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path, stopping: asyncio.Event) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    sup = Supervisor([_child(tmp_path, "stubborn", stubborn)], grace_s=0.5)
    run = asyncio.ensure_future(sup.run(stopping))
    try:
        await eventually(lambda: "ready" in (tmp_path / "stubborn.log").read_text(), timeout=20, message="child ready")
        pid = sup.statistics()[0].pid
        assert pid is not None
    finally:
        stopping.set()
        await asyncio.wait_for(run, 20)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_no_children_runs_until_stopped(stopping: asyncio.Event) -> None:
    run = asyncio.ensure_future(Supervisor([]).run(stopping))
    await asyncio.sleep(0)
    assert not run.done()
    stopping.set()
    await asyncio.wait_for(run, 5)


# ---- the whole command ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RR_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env.update(extra)
    return env


class RrUp:
    """A running `python -m cli.main up` whose stdout lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def wait_line(self, prefix: str, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"rr up ended before printing {prefix!r}: {self.lines}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if line.startswith(prefix):
                    return line

    async def stop(self, timeout: float = 30.0, interrupt: bool = True) -> tuple[int, str]:
        if interrupt and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        _out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode()


async def _start_up(*argv: str, **env: str) -> RrUp:
    api = () if "--api-port" in argv else ("--api-port", str(_free_port()))  # never the machine's 8770
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "up", "--grace", "5", *api, *argv,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=_env(**env), cwd=PROJECT_ROOT,
    )
    return RrUp(proc)


async def _run_to_end(*argv: str, **env: str) -> tuple[int, str]:
    up = await _start_up(*argv, **env)
    return await up.stop(interrupt=False)


async def test_up_serves_stops_cleanly_and_carries_on_from_its_data(tmp_path: Path) -> None:
    port, data = _free_port(), tmp_path / "data"
    up = await _start_up("--nats-port", str(port), "--data-dir", str(data))
    try:
        url = (await up.wait_line("rr up: NATS URL")).split()[4]
        assert url == f"nats://127.0.0.1:{port}"
        await up.wait_line("rr up: watch events: rr events tail")
        bus = await connect(url, node_id="test")
        try:
            assert all(s.exists and s.replicas == 1 for s in await stream_states(bus))
            published = await Publisher(bus).publish(HostOnline(node="gpu-7"))
        finally:
            await bus.close()
    finally:
        code, err = await up.stop()
    assert code == 0, err
    assert _port_free(port), "the embedded server is gone"
    assert (data / "logs").is_dir() and (data / "nats").is_dir()

    again = await _start_up("--nats-port", str(port), "--data-dir", str(data))
    try:
        url = (await again.wait_line("rr up: NATS URL")).split()[4]
        bus = await connect(url, node_id="test")
        try:
            records: list[Record] = []
            await replay(bus, records.append)
            assert [r.seq for r in records] == [published.seq]
        finally:
            await bus.close()
    finally:
        code, err = await again.stop()
    assert code == 0, err


SITE_REGISTRATIONS = """
from servicekit.runtime import ServiceEntry, register
register(ServiceEntry(name="tiny", target="tests.tiny_service:main", description="announces itself"))
register(ServiceEntry(name="broken", target="tests.tiny_service:broken", description="always fails"))
register(ServiceEntry(name="manual", target="tests.tiny_service:main", description="not for rr up", on_up=False))
"""


async def test_up_runs_every_on_up_service_and_restarts_a_crashing_one(tmp_path: Path) -> None:
    # sitecustomize registers test services in rr up and in every child it starts.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_REGISTRATIONS)
    data = tmp_path / "data"
    up = await _start_up(
        "--nats-port", str(_free_port()), "--data-dir", str(data), "--node-id", "lap-1",
        PYTHONPATH=f"{site}:{PROJECT_ROOT}",
    )
    try:
        url = (await up.wait_line("rr up: NATS URL")).split()[4]
        names = (await up.wait_line("rr up: services:")).split(":", 2)[2].strip().split(", ")
        assert {"broken", "tiny"} <= set(names) and "manual" not in names
        bus = await connect(url, node_id="test")
        try:

            async def tiny_announced() -> bool:
                records: list[Record] = []
                await replay(bus, records.append)
                return any(r.subject == "rr.evt.host.lap-1.HOST_ONLINE.lap-1" for r in records)

            await eventually(tiny_announced, timeout=30, message="the tiny service published HOST_ONLINE")
        finally:
            await bus.close()
        broken_log = data / "logs" / "broken.log"
        await eventually(
            lambda: broken_log.read_text().count("tiny service lost the bus") >= 2, timeout=30, message="broken restarted"
        )
    finally:
        code, err = await up.stop()
    assert code == 0, err
    assert "service broken exited with code 1" in err and "restarting in" in err and "tiny service lost the bus" in err
    assert not (data / "logs" / "manual.log").exists()


async def test_up_with_a_nats_url_joins_that_server_and_leaves_it_running(nats_url: str, tmp_path: Path) -> None:
    up = await _start_up("--nats", nats_url, "--data-dir", str(tmp_path / "data"))
    try:
        line = await up.wait_line("rr up: NATS URL")
        assert line == f"rr up: NATS URL {nats_url} (joined an existing cluster)"
        await up.wait_line("rr up: Ctrl-C to stop")
    finally:
        code, err = await up.stop()
    assert code == 0, err
    bus = await connect(nats_url, node_id="test")
    try:
        assert all(s.exists for s in await stream_states(bus)), "provisioned, and the server still runs"
    finally:
        await bus.close()


async def test_a_taken_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code, err = await _run_to_end("--nats-port", str(port), "--data-dir", str(tmp_path / "data"))
    assert code == 1
    assert err.strip().splitlines() == [
        f"rr: port {port} is in use: another rr up or nats-server? use --nats-port or --nats URL"
    ]


async def test_a_taken_api_port_is_one_line_and_exit_1_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        api_port, nats_port = listener.getsockname()[1], _free_port()
        code, err = await _run_to_end("--nats-port", str(nats_port), "--api-port", str(api_port), "--data-dir", str(tmp_path / "data"))
    assert code == 1
    assert err.strip().splitlines() == [
        f"rr: port {api_port} is in use: another rr up, or the old P2P daemon on its port? use --api-port"
    ]
    assert _port_free(nats_port), "no server was left behind"


async def test_an_unwritable_data_dir_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    code, err = await _run_to_end("--nats-port", str(_free_port()), "--data-dir", str(tmp_path / "afile" / "data"))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "data dir" in lines[0] and "not writable" in lines[0]


async def test_a_data_dir_too_small_for_the_streams_is_one_line_and_exit_1_before_the_server_starts(tmp_path: Path) -> None:
    port = _free_port()
    with mounted_tmpfs(tmp_path / "small", "64m") as data:  # needs root, as CI has
        code, err = await _run_to_end("--nats-port", str(port), "--data-dir", str(data))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("rr: the streams need 24.00 GiB reserved but the data dir's disk has 0.06 GiB free"), lines[0]
    assert "lower streams.events_max_gib=20, streams.context_max_gib=2, streams.telemetry_max_gib=1" in lines[0], lines[0]
    assert _port_free(port), "no server was started"


async def test_a_missing_server_binary_is_one_line_with_the_install_hint(tmp_path: Path) -> None:
    port = _free_port()
    code, err = await _run_to_end(
        "--nats-port", str(port), "--data-dir", str(tmp_path / "data"), RR_NATS_SERVER_BIN="/nonexistent"
    )
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rr: ") and "nats-server" in lines[0] and "install" in lines[0]
    assert _port_free(port)
