"""Waiting for the fleet, as the operator would check it: NATS servers listening, streams provisioned, services and a leader (blocking)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from ops.fleet.launch import admin_credentials, decode_rows, operator_config
from ops.fleet.plan import NATS_PORT, FleetError, FleetPlan, HostPlan
from servicekit.auth.credentials import CREDENTIALS_ENV


def operator_env(plan: FleetPlan) -> dict[str, str]:
    """How `rr` in the root namespace points at the fleet: every NATS URL and the admin credentials."""
    return {**os.environ, "RR_NATS_URL": ",".join(plan.nats_urls()), CREDENTIALS_ENV: str(admin_credentials(plan)),
            "RR_NODE_ID": "fleet-operator", "RR_CONFIG": str(operator_config(plan))}


def rr(plan: FleetPlan, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`rr ARGS` from the root namespace against the fleet."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          env=operator_env(plan), timeout=timeout)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> None:
    """Poll `check` until true; FleetError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise FleetError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def listening(address: str, port: int = NATS_PORT) -> bool:
    """Whether a TCP connection to address:port opens."""
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return True
    except OSError:
        return False


def streams_provisioned(plan: FleetPlan) -> bool:
    """`rr streams init --replicas 3` succeeded (it fails until the cluster has a JetStream meta leader)."""
    return rr(plan, "streams", "init", "--replicas", "3").returncode == 0


def missing_services(plan: FleetPlan, hosts: list[HostPlan] | None = None) -> list[str]:
    """`host/service` of every planned service (of `hosts`, default all) that does not answer `rr services` yet."""
    done = rr(plan, "services", "--json", "--timeout", "2")
    running = {(str(r.get("node")), str(r.get("name"))) for r in decode_rows(done.stdout) if isinstance(r, dict)}
    return [f"{h.name}/{s}" for h in (plan.hosts if hosts is None else hosts) for s in h.services if (h.node_id, f"rr-{s}") not in running]


def scheduler_leader(plan: FleetPlan) -> str | None:
    """The node leading the scheduler role, None when there is none yet."""
    done = rr(plan, "leader", "--json")
    for line in done.stdout.splitlines():
        row = decode_rows(f"[{line}]")
        if row and isinstance(row[0], dict) and row[0].get("role") == "scheduler" and row[0].get("node"):
            return str(row[0]["node"])
    return None
