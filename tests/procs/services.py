"""`rr-service <name>` processes for tests: spawned with their output in a log file, the environment a unit would give them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.procs.leader_fleet import ROOT


def spawn_service(service: str, node: str, url: str, config: Path, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    """Start `rr-service <service>` as `node`; extra environment (RR_NATS_CREDS, RR_DATA_DIR, ...) from `env`."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "RR_DATA_DIR": str(log_path.parent / f"data-{node}"), **env}
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.service_main", service, "--nats", url, "--node-id", node, "--config", str(config)],
            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
