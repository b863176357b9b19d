"""Leader candidates as separate OS processes (`python -m cli.service_main leader ...`), for failover tests.

Everything here blocks (process waits); async tests call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, *, ttl_s: int = 2, replicas: int = 1, bucket: str = "rr_leases") -> Path:
    """An rr config file with a short lease, quick membership, and only the test's own items to assign."""
    path.write_text(
        f"streams:\n  replicas: {replicas}\n"
        f"leadership:\n  ttl_s: {ttl_s}\n  bucket: {bucket}\n"
        "membership:\n  heartbeat_interval_s: 0.2\n  missed_beats_offline: 5\n"
        "scheduler:\n  populator_enabled: false\npipeline:\n  enabled: false\n"
    )
    return path


class LeaderProcess:
    """One `leader` service process for one node id, its output in a log file."""

    def __init__(self, url: str, node_id: str, config: Path, log_dir: Path) -> None:
        self.url = url
        self.node_id = node_id
        self.config = config
        self.log_path = log_dir / f"{node_id}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn the process (again, after a kill)."""
        self.reap()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "cli.service_main", "leader",
                   "--nats", self.url, "--node-id", self.node_id, "--config", str(self.config)]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def running(self) -> bool:
        """Whether the process is alive (stopped counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal (SIGKILL, SIGSTOP, SIGCONT, SIGTERM)."""
        assert self._proc is not None
        self._proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.running:
            self.signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (a clean shutdown) and wait for the exit code."""
        if not self.running:
            return self.reap()
        self.signal(signal.SIGTERM)
        assert self._proc is not None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def reap(self) -> int | None:
        """The exit code once the process has exited (collecting it), else None."""
        if self._proc is None:
            return None
        return self._proc.poll()

    def log_text(self) -> str:
        """What the process wrote."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Fleet:
    """Several candidate processes; all killed and reaped on exit, whatever happened."""

    def __init__(self, url: str, node_ids: list[str], config: Path, log_dir: Path) -> None:
        self.nodes = {n: LeaderProcess(url, n, config, log_dir) for n in node_ids}

    def __getitem__(self, node_id: str) -> LeaderProcess:
        return self.nodes[node_id]

    def __enter__(self) -> Fleet:
        for proc in self.nodes.values():
            proc.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for proc in self.nodes.values():
            proc.kill()

    def logs(self) -> str:
        """Every process's output, for a failure message."""
        return "\n".join(f"--- {n} ---\n{p.log_text()[-3000:]}" for n, p in self.nodes.items())
