"""One job as a process group: spawned in its own session, watched, stopped with SIGTERM then SIGKILL.

The job's stdout speaks the workload protocol (workload/report.py): `{"progress": f,
"message": m}` lines while it runs and one `{"result": {...}}` at the end; any other output, and
all of stderr, goes to the attempt's log. Nothing here waits on the event loop: the process is
an asyncio subprocess, its pipes are read as streams, and psutil runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec

from services.worker import processes

log = logging.getLogger(__name__)

LINE_LIMIT = 1 << 20  # a stdout line longer than this is dropped, not fatal
READERS_DRAIN_S = 5.0  # after the group is dead, its pipes get this long to report EOF
EXIT_POLL_S = 0.05  # how often a stopping job is checked for having exited

ProgressCallback = Callable[[float | None, str], None]


class JobLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How long a job may run, how long it may be silent, and how it is stopped."""

    timeout_s: float
    grace_s: float
    stuck_after_s: float = 0.0  # 0: no stuck detection
    stderr_tail_bytes: int = 2048
    watch_interval_s: float = 1.0


class JobOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a job ended: exit status, why it was stopped (None when it exited by itself), what it said."""

    exit_code: int | None  # negative: killed by that signal
    stop_reason: str | None
    stderr_tail: str
    result: Any = None  # the last `{"result": ...}` value, undecoded
    duration_s: float = 0.0
    killed: bool = False  # SIGKILL was needed

    @property
    def succeeded(self) -> bool:
        """Exited 0 by itself."""
        return self.stop_reason is None and self.exit_code == 0


class _Line(msgspec.Struct):
    progress: Any = None
    message: Any = ""
    result: Any = msgspec.UNSET


_line_decoder = msgspec.json.Decoder(_Line)


class Job:
    """A command running as its own process group, until it exits or is stopped."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path,
                 limits: JobLimits, on_progress: ProgressCallback) -> None:
        self.argv = list(argv)
        self._env = dict(env)
        self._cwd = cwd
        self._log_path = log_path
        self.limits = limits
        self._on_progress = on_progress
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._tail = bytearray()
        self._result: Any = None
        self._stop_reason: str | None = None
        self._stop_asked = asyncio.Event()
        self._grace_s = limits.grace_s
        self.pid = 0
        self.create_time: float | None = None
        self.started_at = 0.0  # monotonic
        self.last_progress_at = 0.0  # monotonic; the start counts as progress

    @property
    def pgid(self) -> int:
        """The job's process group: its session leader's pid."""
        return self.pid

    async def start(self) -> int:
        """Spawn the process in a new session; returns its pid. Raises OSError when it cannot be started."""
        self._log = await asyncio.to_thread(self._open_log)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self._cwd, env=self._env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=LINE_LIMIT,
            )
        except OSError:
            await asyncio.to_thread(self._log.close)
            raise
        self.pid = self._proc.pid
        self.started_at = self.last_progress_at = time.monotonic()
        self.create_time = await asyncio.to_thread(processes.create_time, self.pid)
        return self.pid

    def _open_log(self) -> IO[bytes]:
        self._cwd.mkdir(parents=True, exist_ok=True)
        return self._log_path.open("ab")

    def request_stop(self, reason: str, grace_s: float | None = None) -> None:
        """Stop the job (SIGTERM, then SIGKILL after the grace, or `grace_s`); the first reason given is reported."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if grace_s is not None:
            self._grace_s = min(self._grace_s, grace_s)
        self._stop_asked.set()

    async def run(self) -> JobOutcome:
        """Watch the job until it has exited and its group is gone; the outcome says how it ended."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None, "start() first"
        readers = [asyncio.ensure_future(self._read_stdout(proc.stdout)),
                   asyncio.ensure_future(self._read_stderr(proc.stderr))]
        exited = asyncio.ensure_future(proc.wait())
        try:
            reason, killed = await self._supervise(proc, exited)
            await self._finish(exited, readers)
        finally:
            for task in (exited, *readers):
                task.cancel()
            await asyncio.gather(exited, *readers, return_exceptions=True)
            if self._log is not None:
                await asyncio.to_thread(self._log.close)
        return JobOutcome(
            exit_code=proc.returncode, stop_reason=reason, killed=killed, result=self._result,
            stderr_tail=bytes(self._tail).decode("utf-8", "replace"),
            duration_s=round(time.monotonic() - self.started_at, 3),
        )

    async def _supervise(self, proc: asyncio.subprocess.Process, exited: asyncio.Future[int]) -> tuple[str | None, bool]:
        # proc.wait() also waits for the pipes to close, which a leftover grandchild can hold
        # open; so the exit itself is read from returncode at every tick.
        stop_asked = asyncio.ensure_future(self._stop_asked.wait())
        try:
            while proc.returncode is None:
                reason = self._stop_reason or self._overdue()
                if reason is not None:
                    return reason, await self._terminate(proc, exited)
                waited: list[asyncio.Future[Any]] = [exited, stop_asked]
                await asyncio.wait(waited, timeout=self._next_check_in(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_asked.cancel()
        return None, False

    def _overdue(self) -> str | None:
        now = time.monotonic()
        limits = self.limits
        if now - self.started_at >= limits.timeout_s:
            return f"timeout: still running after {limits.timeout_s:g}s"
        if limits.stuck_after_s and now - self.last_progress_at >= limits.stuck_after_s:
            return f"stuck: no progress line for {now - self.last_progress_at:.0f}s (stuck_after_s {limits.stuck_after_s:g})"
        return None

    def _next_check_in(self) -> float:
        now = time.monotonic()
        limits = self.limits
        due = [limits.watch_interval_s, self.started_at + limits.timeout_s - now]
        if limits.stuck_after_s:
            due.append(self.last_progress_at + limits.stuck_after_s - now)
        return max(0.01, min(due))

    async def _terminate(self, proc: asyncio.subprocess.Process, exited: asyncio.Future[int]) -> bool:
        """SIGTERM the group, SIGKILL it after the grace if the job is still there; True when SIGKILL was needed."""
        processes.signal_group(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s
        while proc.returncode is None and time.monotonic() < deadline:
            await asyncio.wait([exited], timeout=min(EXIT_POLL_S, max(0.0, deadline - time.monotonic())))
        killed = proc.returncode is None
        if killed:
            log.warning("job %d ignored SIGTERM for %gs: SIGKILL", self.pid, self._grace_s)
            processes.signal_group(self.pgid, signal.SIGKILL)
        while proc.returncode is None:
            await asyncio.wait([exited], timeout=EXIT_POLL_S)
        return killed

    async def _finish(self, exited: asyncio.Future[int], readers: Sequence[asyncio.Future[None]]) -> None:
        # Whatever is left of the group (children that outlived the job, or ignored SIGTERM)
        # belongs to the job and goes with it; then the pipes close and the readers end.
        if processes.signal_group(self.pgid, signal.SIGKILL):
            await self._wait_group_gone()
        waited: list[asyncio.Future[Any]] = [exited, *readers]
        _, pending = await asyncio.wait(waited, timeout=READERS_DRAIN_S)
        if pending:
            log.warning("job %d: output still open %gs after its group was killed (a child left the group?)",
                        self.pid, READERS_DRAIN_S)

    async def _wait_group_gone(self) -> None:
        # A signal is delivered, not obeyed, when killpg returns: the group is gone once no
        # live member is left (zombies waiting for whoever adopted them do not count).
        deadline = time.monotonic() + READERS_DRAIN_S
        while await asyncio.to_thread(processes.group_members, self.pgid, self.create_time or 0.0):
            if time.monotonic() > deadline:
                log.warning("job %d: processes of its group survived SIGKILL for %gs", self.pid, READERS_DRAIN_S)
                return
            await asyncio.sleep(EXIT_POLL_S)

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than LINE_LIMIT: the reader dropped it
                continue
            if not line:
                return
            if not self._protocol_line(line):
                self._write_log(line)

    def _protocol_line(self, line: bytes) -> bool:
        if not line.startswith(b"{"):
            return False
        try:
            parsed = _line_decoder.decode(line)
        except msgspec.DecodeError:
            return False
        if parsed.result is not msgspec.UNSET:
            self._result = parsed.result
            return True
        if parsed.progress is None and not parsed.message:
            return False
        self.last_progress_at = time.monotonic()
        fraction = parsed.progress if isinstance(parsed.progress, (int, float)) and not isinstance(parsed.progress, bool) else None
        self._on_progress(None if fraction is None else min(max(float(fraction), 0.0), 1.0), str(parsed.message or ""))
        return True

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        limit = self.limits.stderr_tail_bytes
        while chunk := await stream.read(1 << 16):
            self._write_log(chunk)
            self._tail += chunk
            if len(self._tail) > limit:
                del self._tail[: len(self._tail) - limit]

    def _write_log(self, data: bytes) -> None:
        # A buffered append to a local file: it lands in the page cache, it does not wait on a disk.
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.write(data)
