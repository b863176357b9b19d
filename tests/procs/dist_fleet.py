"""`distributor` and `sync` services as separate OS processes (`python -m cli.service_main <name> ...`), one per node.

Everything here blocks (process waits); async tests call stop/kill through `asyncio.to_thread`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]


def write_node_config(path: Path, node_dir: Path, *, hosts_file: Path | None = None, extra: str = "") -> Path:
    """An rr config for one test node: its own data and models dirs, fast retries and polls."""
    lines = [
        f"worker:\n  data_dir: {node_dir / 'data'}\n  models_dir: {node_dir / 'models'}",
        "distribution:\n  retry_initial_s: 0.2\n  retry_max_s: 1.0\n  missing_grace_s: 3.0\n  check_interval_s: 1.0"
        "\n  free_margin_mb: 1.0\n  idle_timeout_s: 5.0\n  complete_check_s: 0.2",
        "sync:\n  plan_interval_s: 0.3\n  poll_initial_s: 0.1\n  poll_max_s: 0.5\n  retry_after_s: 0.5\n  retry_max_s: 2.0"
        "\n  transfer_timeout_s: 30.0\n  idle_timeout_s: 5.0",  # a target waits past a loaded machine's upload
    ]
    if hosts_file is not None:
        lines.append(f"hosts_file: {hosts_file}")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


class ServiceProcess:
    """One rr service process for one node id, its output in <log_dir>/<service>-<node>.log."""

    def __init__(self, service: str, url: str, node_id: str, config: Path, log_dir: Path) -> None:
        self.service = service
        self.url = url
        self.node_id = node_id
        self.config = config
        self.log_path = log_dir / f"{service}-{node_id}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        """Spawn the process."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "cli.service_main", self.service, "--nats", self.url,
                   "--node-id", self.node_id, "--config", str(self.config)]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait for a clean exit (SIGKILL past `timeout`); the exit status."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        return self._proc.returncode

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Fleet:
    """Several service processes stopped together at exit; `logs()` for assertion messages."""

    def __init__(self) -> None:
        self.processes: list[ServiceProcess] = []

    def add(self, process: ServiceProcess) -> ServiceProcess:
        """Start a process and keep it for cleanup."""
        self.processes.append(process.start())
        return process

    def stop(self) -> list[int | None]:
        """Stop every process; their exit statuses."""
        return [p.stop() for p in self.processes]

    def logs(self) -> str:
        """The tail of every process's log."""
        return "\n".join(f"--- {p.service} {p.node_id}\n{p.log()[-3000:]}" for p in self.processes)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


async def wait_for(fleet: Fleet, predicate: Callable[[], object], timeout: float, what: str) -> object:
    """`eventually(predicate)`, failing with the processes' logs as they are at the deadline."""
    from tests.helpers import eventually

    try:
        return await eventually(predicate, timeout=timeout, message=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{fleet.logs()}") from None
