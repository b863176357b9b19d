"""One owner per data dir: the lock rules in-process, then real `rr up` and `rr-service` processes refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cli.up.errors import UpError
from cli.up.lock import (
    FD_ENV,
    LOCK_NAME,
    DataDirInUse,
    LockOwner,
    fd_holders,
    inherited_lock,
    lock_service,
    lock_up,
    locking_pids,
    read_owner,
)
from tests.helpers import eventually
from tests.test_up import PROJECT_ROOT, _env, _free_port, _port_free, _start_up

UP = LockOwner(pid=os.getpid(), owner="rr up")


def tree(root: Path) -> list[tuple[str, int, int]]:
    """Every path under root with its mtime and size: what a refused start must leave as it was."""
    entries = [(".", root.stat().st_mtime_ns, 0)]
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        entries.append((str(path.relative_to(root)), st.st_mtime_ns, st.st_size))
    return entries


# ---- the rules, in one process (separate opens of a file lock against each other) ----


def test_rr_up_creates_a_missing_data_dir_once_the_lock_is_its_own(tmp_path: Path) -> None:
    data = tmp_path / "a" / "data"
    held = lock_up(data, UP)
    try:
        assert read_owner(data / LOCK_NAME) == UP
    finally:
        held.close()
    lock_up(data, UP).close()  # released: the next one takes it


def test_a_second_rr_up_is_refused_naming_dir_and_pid_and_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    held = lock_up(data, UP)
    (data / "logs").mkdir()
    before = tree(data)
    try:
        with pytest.raises(DataDirInUse) as refused:
            lock_up(data, LockOwner(pid=1, owner="rr up"))
    finally:
        held.close()
    assert str(refused.value) == (
        f"data dir {data} is in use by rr up pid {os.getpid()} (lock {data / LOCK_NAME}); "
        "stop it first or use another data dir (--data-dir or RR_DATA_DIR)"
    )
    assert tree(data) == before


def test_services_alone_share_a_data_dir_but_not_with_rr_up_or_their_twin(tmp_path: Path) -> None:
    worker = lock_service("worker", tmp_path, {})
    sync = lock_service("sync", tmp_path, {})
    try:
        with pytest.raises(DataDirInUse, match="rr-service worker pid"):
            lock_service("worker", tmp_path, {})
        with pytest.raises(DataDirInUse, match=f"in use by pid {os.getpid()} "):
            lock_up(tmp_path, UP)
    finally:
        worker.close()
        sync.close()
    up = lock_up(tmp_path, UP)
    try:
        with pytest.raises(DataDirInUse, match="in use by rr up pid"):
            lock_service("worker", tmp_path, {})
    finally:
        up.close()


def test_a_child_of_rr_up_runs_under_its_inherited_lock_only_for_that_data_dir(tmp_path: Path) -> None:
    up = lock_up(tmp_path / "up", UP)
    other = tmp_path / "other"
    other.mkdir()
    try:
        env = {FD_ENV: str(up.fd)}
        assert inherited_lock(tmp_path / "up", env) is not None
        assert lock_service("worker", tmp_path / "up", env).fds == [up.fd]
        assert inherited_lock(other, env) is None, "a service pointed elsewhere locks that dir itself"
        assert inherited_lock(tmp_path / "up", {FD_ENV: "999999"}) is None
        lock_service("worker", other, env).close()
    finally:
        up.close()


def test_abandoning_a_fresh_lock_removes_the_directories_it_made_and_nothing_else(tmp_path: Path) -> None:
    lock_up(tmp_path / "a" / "b" / "data", UP).abandon()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    held = lock_up(tmp_path / "kept" / "data", UP)
    (tmp_path / "kept" / "data" / "other").write_text("not ours")
    held.abandon()
    assert [p.name for p in (tmp_path / "kept" / "data").iterdir()] == ["other"]
    existing = lock_up(tmp_path / "kept", UP)
    existing.abandon()
    assert (tmp_path / "kept" / LOCK_NAME).exists(), "a data dir that existed keeps its lock file"


def test_a_data_dir_that_cannot_be_made_is_not_writable(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(UpError, match="not writable"):
        lock_up(tmp_path / "afile" / "data", UP)


def test_lock_holders_are_read_from_proc_locks() -> None:
    text = (
        "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2147605 0 EOF\n"
        "1: -> FLOCK  ADVISORY  WRITE 777 fe:00:2147605 0 EOF\n"
        "2: FLOCK  ADVISORY  READ 10 fe:00:2147605 0 EOF\n"
        "3: POSIX  ADVISORY  WRITE 11 fe:00:2147605 0 EOF\n"
        "4: FLOCK  ADVISORY  WRITE 12 fe:00:99 0 EOF\n"
    )
    assert locking_pids(text, 0xFE, 0, 2147605) == [4242, 10]


# ---- real processes ---------------------------------------------------------------------


async def _run(*argv: str, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_env(**env), cwd=PROJECT_ROOT)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP a process and every descendant (parents first, so none starts a new one unseen); SIGCONT after."""
    stopped: list[psutil.Process] = []
    try:
        pending = [psutil.Process(pid)]
        while pending:
            proc = pending.pop()
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.suspend()
                stopped.append(proc)
                pending += proc.children()
        yield
    finally:
        for proc in reversed(stopped):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.resume()


def _refusal(data: Path, who: str) -> str:
    return (f"data dir {data} is in use by {who} (lock {data / LOCK_NAME}); "
            "stop it first or use another data dir (--data-dir or RR_DATA_DIR)")


async def test_a_second_rr_up_on_a_running_data_dir_is_one_line_exit_1_and_starts_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    up = await _start_up("--nats-port", str(_free_port()), "--data-dir", str(data))
    try:
        url = (await up.wait_line("rr up: NATS URL")).split()[4]
        await up.wait_line("rr up: Ctrl-C to stop")
        await eventually(lambda: "rr-service worker" in fd_holders(data / LOCK_NAME).values(), timeout=30,
                         message="the worker runs under rr up's lock")
        nats_port, api_port = _free_port(), _free_port()
        with frozen(up.proc.pid):  # the first rr up and all it started write nothing while the second tries
            before = tree(data)
            code, _out, err = await _run("-m", "cli.main", "up", "--nats-port", str(nats_port), "--api-port",
                                         str(api_port), "--data-dir", str(data))
            after = tree(data)
        assert code == 1
        assert err.strip().splitlines() == [f"rr: {_refusal(data, f'rr up pid {up.proc.pid}')}"]
        assert after == before, "the refused rr up created or changed nothing"
        assert _port_free(nats_port) and _port_free(api_port), "the refused rr up started no server"
        assert read_owner(data / LOCK_NAME) == LockOwner(pid=up.proc.pid, owner="rr up", nats_url=url, embedded=True)

        # A service started by hand on the same data dir is refused too; rr up's own worker is not.
        code, _out, err = await _run("-m", "cli.service_main", "worker", "--nats", url, RR_DATA_DIR=str(data))
        assert code == 1
        assert err.strip().splitlines()[-1] == f"rr-service worker: {_refusal(data, f'rr up pid {up.proc.pid}')}"
        assert "in use" not in (data / "logs" / "worker.log").read_text()

        # rr doctor on that data dir checks this rr up's server; its lock is no failure, nor its sync interval.
        code, out, err = await _run("-m", "cli.main", "doctor", "--json", "--data-dir", str(data), "--min-free-gib", "0.001")
        report = json.loads(out)
        checks = {c["name"]: c for c in report["checks"]}
        assert (code, report["ok"], report["nats_url"]) == (0, True, url), out + err
        assert checks["data dir lock"]["detail"] == f"in use by rr up pid {up.proc.pid} ({data / LOCK_NAME})"
        assert "durability" not in checks and checks["history read"]["ok"] and checks["leadership"]["ok"]
    finally:
        code, err = await up.stop()
    assert code == 0, err


async def test_a_refused_rr_up_leaves_the_data_dir_exactly_as_it_was(tmp_path: Path) -> None:
    # The holder here is quiet (it only holds the lock), so the whole tree, mtimes included, must not move.
    data = tmp_path / "data"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import os, sys, time; from pathlib import Path; from cli.up.lock import LockOwner, lock_up; "
        f"lock_up(Path({str(data)!r}), LockOwner(pid=os.getpid(), owner='rr up')); print('held', flush=True); "
        "sys.stdin.read()",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=_env(), cwd=PROJECT_ROOT)
    try:
        assert holder.stdout is not None and await asyncio.wait_for(holder.stdout.readline(), 30) == b"held\n"
        before = tree(data)
        code, _out, err = await _run("-m", "cli.main", "up", "--nats-port", str(_free_port()), "--api-port",
                               str(_free_port()), "--data-dir", str(data))
        assert code == 1
        assert err.strip().splitlines() == [f"rr: {_refusal(data, f'rr up pid {holder.pid}')}"]
        assert tree(data) == before
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        await asyncio.wait_for(holder.wait(), 30)


async def test_what_a_killed_rr_up_left_running_keeps_the_data_dir_and_rr_doctor_names_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    up = await _start_up("--nats-port", str(_free_port()), "--data-dir", str(data))
    keepers: dict[int, str] = {}
    try:
        await up.wait_line("rr up: Ctrl-C to stop")
        await eventually(lambda: "rr-service worker" in fd_holders(data / LOCK_NAME).values(), timeout=30,
                         message="the worker runs under rr up's lock")
        up.proc.kill()  # its nats-server and services run in their own sessions: they outlive it
        await up.stop(interrupt=False)
        keepers = fd_holders(data / LOCK_NAME)
        assert "nats-server" in keepers.values(), keepers
        code, _out, err = await _run("-m", "cli.main", "up", "--nats-port", str(_free_port()), "--api-port",
                                     str(_free_port()), "--data-dir", str(data))
        assert code == 1
        [line] = err.strip().splitlines()
        assert line.startswith(f"rr: data dir {data} is in use by rr up pid {up.proc.pid} (exited; still held by ")
        assert "nats-server pid" in line and "rr-service worker pid" in line
        code, out, err = await _run("-m", "cli.main", "doctor", "--json", "--data-dir", str(data), "--monitor", "",
                                    "--min-free-gib", "0.001")
        lock = next(c for c in json.loads(out)["checks"] if c["name"] == "data dir lock")
        assert code == 1 and not lock["ok"] and "has exited; still open in" in lock["detail"], out + err
    finally:
        for pid in keepers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_a_start_refused_for_a_taken_port_creates_no_data_dir(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        code, _out, err = await _run("-m", "cli.main", "up", "--nats-port", str(listener.getsockname()[1]),
                                     "--data-dir", str(tmp_path / "new" / "data"))
    assert code == 1 and "is in use" in err
    assert list(tmp_path.iterdir()) == []
