"""Keeping child service processes running: start, restart with backoff on a crash, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import logging
import os
import signal
import time
from pathlib import Path

import msgspec

from cli.up.policy import ChildHistory, RestartPolicy, after_exit, describe_exit

log = logging.getLogger(__name__)


class ChildSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One process to keep running: its name, command line, environment and log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    pass_fds: tuple[int, ...] = ()  # descriptors it inherits: rr up's data-dir lock


class ChildStats(msgspec.Struct, frozen=True, kw_only=True):
    """One child as the supervisor sees it now."""

    name: str
    pid: int | None
    restarts: int
    last_exit: str | None


class Supervisor:
    """Runs every child in its own process group until `stopping` is set, then stops them all."""

    def __init__(self, children: list[ChildSpec], *, policy: RestartPolicy = RestartPolicy(), grace_s: float = 10.0) -> None:
        self.children = children
        self.policy = policy
        self.grace_s = grace_s
        self._stats = {c.name: ChildStats(name=c.name, pid=None, restarts=0, last_exit=None) for c in children}

    def statistics(self) -> list[ChildStats]:
        """Pid, restart count and last exit of each child."""
        return list(self._stats.values())

    async def run(self, stopping: asyncio.Event) -> None:
        """Return once `stopping` is set and every child has exited."""
        async with asyncio.TaskGroup() as tasks:
            for child in self.children:
                tasks.create_task(self._keep_running(child, stopping))
            await stopping.wait()

    async def _keep_running(self, child: ChildSpec, stopping: asyncio.Event) -> None:
        history = ChildHistory()
        while not stopping.is_set():
            started = time.monotonic()
            proc = await self._start(child)
            why = await self._wait_exit_or_stop(child, proc, stopping) if proc else "could not be started"
            if stopping.is_set():
                return
            history, delay = after_exit(self.policy, history, time.monotonic() - started)
            self._stats[child.name] = ChildStats(name=child.name, pid=None, restarts=history.restarts, last_exit=why)
            last = await asyncio.to_thread(last_line, child.log_path)
            log.warning(
                "service %s %s after %.1fs; restarting in %.1fs; its last output: %s (log: %s)",
                child.name, why, time.monotonic() - started, delay, last or "(none)", child.log_path,
            )
            await _wait_stopping(stopping, delay)

    async def _start(self, child: ChildSpec) -> asyncio.subprocess.Process | None:
        stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        banner = f"\n=== rr up: starting {child.name} at {stamp}: {' '.join(child.argv)}\n".encode()
        log_file = await asyncio.to_thread(_open_log, child.log_path, banner)
        try:
            proc = await asyncio.create_subprocess_exec(
                *child.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=child.env,
                start_new_session=True,  # its own process group: a terminal's Ctrl-C reaches rr up only
                pass_fds=child.pass_fds,
            )
        except OSError as exc:
            log.error("service %s could not be started: %s", child.name, exc)
            return None
        finally:
            log_file.close()  # the child holds its own descriptor
        self._stats[child.name] = msgspec.structs.replace(self._stats[child.name], pid=proc.pid)
        log.info("service %s started (pid %d, log %s)", child.name, proc.pid, child.log_path)
        return proc

    async def _wait_exit_or_stop(self, child: ChildSpec, proc: asyncio.subprocess.Process, stopping: asyncio.Event) -> str:
        exited = asyncio.ensure_future(proc.wait())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait([exited, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not exited.done():
                await stop_process(proc, self.grace_s, child.name)
            returncode = await exited
        return describe_exit(returncode)


async def stop_process(proc: asyncio.subprocess.Process, grace_s: float, name: str) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it has not exited within `grace_s`."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
        return
    except TimeoutError:
        log.warning("service %s did not stop within %.0fs of SIGTERM; killing it", name, grace_s)
    _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def last_line(path: Path, tail_bytes: int = 4096) -> str:
    """The last non-empty line of a log file: usually why a child exited."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - tail_bytes))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _open_log(path: Path, banner: bytes) -> io.BufferedWriter:
    handle = open(path, "ab")  # noqa: SIM115  (closed by the caller once the child has it)
    handle.write(banner)
    handle.flush()
    return handle


async def _wait_stopping(stopping: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout)
