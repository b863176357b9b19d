"""Waiting for the fleet, as the operator would check it: NATS servers listening, streams provisioned, services and a leader (blocking)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from eventbus.connection import connect
from eventbus.errors import BusError
from eventbus.micro import discover
from ops.fleet.launch import admin_credentials, decode_rows, operator_config
from ops.fleet.plan import NATS_PORT, FleetError, FleetPlan, HostPlan
from servicekit.auth.credentials import CREDENTIALS_ENV, NatsCredentials, connect_options, credentials_from_env


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
    """`host/service` of every planned service (of `hosts`, default all) that does not answer discovery yet (blocking)."""
    # The discovery `rr services` makes ($SRV.INFO), made in this process: an `rr` child per look cost 0.8 s of CPU
    # importing the CLI, beside the services starting up on the same cores (ops/bench/README.md).
    running = asyncio.run(_answering(plan, credentials_from_env(operator_env(plan))))
    return [f"{h.name}/{s}" for h in (plan.hosts if hosts is None else hosts) for s in h.services if (h.node_id, f"rr-{s}") not in running]


async def _answering(plan: FleetPlan, creds: NatsCredentials | None) -> set[tuple[str, str]]:
    """(node, micro service name) of every service answering discovery; none when the cluster cannot be reached."""
    try:
        bus = await connect(plan.nats_urls(), node_id="fleet-operator", name="rr-fleet-ready", **connect_options(creds))
    except BusError:
        return set()
    try:
        infos = await discover(bus, timeout=2.0)
    finally:
        await bus.close()
    return {((info.metadata or {}).get("node", "?"), info.name) for info in infos}


def scheduler_leader(plan: FleetPlan) -> str | None:
    """The node leading the scheduler role, None when there is none yet."""
    done = rr(plan, "leader", "--json")
    for line in done.stdout.splitlines():
        row = decode_rows(f"[{line}]")
        if row and isinstance(row[0], dict) and row[0].get("role") == "scheduler" and row[0].get("node"):
            return str(row[0]["node"])
    return None
