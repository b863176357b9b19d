"""One `rr up` from a source tree, timed: spawn to ready, SIGINT to exit, and each child's milestones from its log.

Ready is what a user waits for: `GET /status` names a leader and this node alive (the agent's beat,
folded by the api), and every child has logged `service <name> started`. The children's logs give
the breakdown (when each finished its imports, when the leader was elected, when the agent beat).
The ceilings, timed beside it: a bare nats-server started and stopped on its own, and one
`rr-service` child's start (bench_startup's `rr-service --list`): `rr up` cannot be ready sooner
than a server start plus one child's imports, nor stop sooner than the server's own stop.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import msgspec

from eventbus.natsserver import NatsServer, ServerSpec, free_ports

# As the tests that start `rr up` configure it: no work appears on its own.
CONFIG = "scheduler: {populator_enabled: false}\npipeline: {enabled: false}\n"
NODE = "bench-up"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 120.0
POLL_S = 0.05
# (milestone, the log line that marks it) in a child's log; its time is the line's timestamp
MILESTONES = (
    ("streams", re.compile(r"cli\.up\.session: streams:")),  # rr up's own log: its server is up, the streams provisioned
    ("spawned", re.compile(r"cli\.up\.supervisor: service \S+ started \(pid")),
    ("imported", re.compile(r"servicekit\.runtime: service \S+ started")),
    ("elected", re.compile(r"leads scheduler")),
    ("serving", re.compile(r"api: serving")),
    ("first_beat", re.compile(r"agent \S+: heartbeat every")),
    ("exited", re.compile(r"nats: disconnected")),
)
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


class UpCycle(msgspec.Struct, frozen=True, kw_only=True):
    """One timed `rr up`: seconds to ready, from SIGINT to exit, and each log's milestones (seconds after the spawn)."""

    ready_s: float
    stop_s: float
    stop_after_s: float  # when the SIGINT was sent
    logs: dict[str, dict[str, float]]


def _ready(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/status", timeout=2) as answer:
            status = json.load(answer)
    except (OSError, ValueError):
        return False
    return bool(status.get("leader_id")) and any(n.get("node_id") == NODE and n.get("alive") for n in status.get("nodes", []))


def _child_logs(log_dir: Path) -> list[Path]:
    return sorted(p for p in log_dir.glob("*.log") if p.name != "nats-server.log")


def _children_imported(log_dir: Path) -> bool:
    imported = dict(MILESTONES)["imported"]
    logs = _child_logs(log_dir)
    return bool(logs) and all(imported.search(p.read_text(errors="replace")) for p in logs)


def milestones(logs: list[Path], since: float) -> dict[str, dict[str, float]]:
    """Per log, the seconds after `since` (epoch) of each milestone it shows (the first; a child's last close as "exited")."""
    found: dict[str, dict[str, float]] = {}
    for path in logs:
        marks: dict[str, float] = {}
        for line in path.read_text(errors="replace").splitlines():
            stamp = STAMP.match(line)
            if stamp is None:
                continue
            at = dt.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - since
            for name, pattern in MILESTONES:
                if pattern.search(line) and _kept(name, marks, path.stem):
                    marks[name] = round(at, 3)
        found[path.stem] = marks
    return found


def _kept(name: str, marks: dict[str, float], log: str) -> bool:
    # A child's exit is its last NATS close; rr up's own close (after provisioning) is no exit.
    if name == "exited":
        return log != "up"
    return name not in marks


def time_up(tree: Path, python: str = sys.executable) -> UpCycle:
    """Start `rr up` from `tree` in a temp data dir; its ready and stop seconds and the children's milestones."""
    with tempfile.TemporaryDirectory(prefix="upfast-bench-") as tmp:
        config, data = Path(tmp) / "rr.yaml", Path(tmp) / "data"
        config.write_text(CONFIG)
        port, api_port = free_ports(2)
        api = f"http://127.0.0.1:{api_port}"
        argv = [python, "-m", "cli.main", "up", "--nats-port", str(port), "--api-port", str(api_port),
                "--data-dir", str(data), "--node-id", NODE, "--config", str(config)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RR_", "OTEL_"))} | {"PYTHONPATH": str(tree)}
        since, started = time.time(), time.monotonic()
        with (Path(tmp) / "up.log").open("wb") as up_log:  # rr up's own log lines (stderr)
            proc = subprocess.Popen(argv, cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=up_log)
        try:
            while not (_ready(api) and _children_imported(data / "logs")):
                if proc.poll() is not None or time.monotonic() - started > READY_TIMEOUT_S:
                    raise RuntimeError(f"rr up from {tree} exited or was not ready within {READY_TIMEOUT_S:g} s; see {data}/logs")
                time.sleep(POLL_S)
            ready_s = time.monotonic() - started
            stop_at = time.monotonic()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(STOP_TIMEOUT_S)
            stop_s = time.monotonic() - stop_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            raise RuntimeError(f"rr up from {tree} exited {code} after SIGINT")
        return UpCycle(ready_s=round(ready_s, 3), stop_s=round(stop_s, 3), stop_after_s=round(stop_at - started, 3),
                       logs=milestones([Path(tmp) / "up.log", *_child_logs(data / "logs")], since))


def time_bare_server() -> tuple[float, float]:
    """Seconds of a bare JetStream nats-server's start (to its port open) and of its stop (SIGTERM to exit)."""
    with tempfile.TemporaryDirectory(prefix="upfast-bench-") as tmp:
        server = NatsServer(ServerSpec(name="bench-bare", port=free_ports(1)[0], store_dir=f"{tmp}/jetstream"))
        started = time.monotonic()
        server.start()
        start_s = time.monotonic() - started
        stopped = time.monotonic()
        server.stop()
        return start_s, time.monotonic() - stopped
