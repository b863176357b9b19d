"""A fleet against one host: time to the first promoted model installed everywhere, and a 100 MB model to N hosts.

loop:          from nothing to the first promoted model installed on every host, in seconds:
               `python -m ops.fleet up` (3 NATS hosts + --workers worker hosts, namespaces on a bridge)
               against `rr up` on one host with the same small workload, in the same run.
distribution:  a --size-mb model put once in the fleet's models bucket, then fetched and verified
               (SHA-256) on every worker host at once, over the bridge; against `cp` of the same file
               into N directories. `ratio` = cp seconds / fleet seconds.
Needs root (network namespaces). Run: python -m ops.bench.bench_fleet [--workers 3] [--size-mb 100] [--skip-single]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eventbus.connection import connect
from eventbus.natsserver import free_port
from eventbus.objects import BucketSpec, ensure_bucket, fetch_to_file, put_file
from ops.bench.common import emit, log
from ops.fleet.files import Workload, rr_config, to_yaml
from ops.fleet.launch import admin_credentials
from ops.fleet.plan import FleetPlan, plan_fleet
from ops.fleet.ready import operator_env
from ops.fleet.state import load
from servicekit.auth.credentials import connect_options, load_credentials

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "rr_models"


def wait_installed(dirs: list[Path], timeout_s: float) -> float:
    """Seconds until every dir holds a canonical model (blocking poll)."""
    started = time.monotonic()
    while not all(any(d.glob("canonical_*.pth")) for d in dirs):
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"no model installed in all of {len(dirs)} hosts after {timeout_s:.0f}s")
        time.sleep(0.5)
    return time.monotonic() - started


def fleet_loop(root: Path, workers: int, timeout_s: float) -> tuple[float, FleetPlan]:
    """Seconds from `ops.fleet up` to a promoted model installed on every host; the fleet stays up."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "ops.fleet", "--root", str(root), "up", "--workers", str(workers), "--nat", "1"],
                   check=True, stdout=subprocess.DEVNULL, timeout=timeout_s)
    state = load(root)
    assert state is not None
    plan = state.plan
    wait_installed([h.path("data", "models") for h in plan.hosts], timeout_s)
    return time.monotonic() - started, plan


def single_loop(work: Path, timeout_s: float) -> float:
    """Seconds from `rr up` (one host, same workload) to its first promoted model installed."""
    plan = plan_fleet("bench", work / "one", workers=1, nat=0, subnet=1)
    host = plan.host("w-1")
    config = rr_config(plan, host, Workload())
    config.pop("hosts_file")
    config["streams"] = {"replicas": 1, "events_max_gib": 1.0, "deadletter_max_gib": 0.25}
    config["api"] = {"host": "127.0.0.1", "port": free_port()}
    config["scheduler"] = {k: v for k, v in config["scheduler"].items() if k != "role_work"}  # type: ignore[attr-defined]
    data = work / "single"
    config["worker"]["data_dir"] = str(data)  # type: ignore[index]
    (work / "single.yaml").write_text(to_yaml(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RR_CONFIG": str(work / "single.yaml"), "RR_NODE_ID": "solo"}
    started = time.monotonic()
    up = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--data-dir", str(data), "--nats-port", str(free_port())],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_installed([data / "models"], timeout_s)
        return time.monotonic() - started
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=60)


async def upload(plan: FleetPlan, path: Path) -> None:
    """Put the file in the fleet's models bucket as the admin."""
    env = operator_env(plan)
    auth = connect_options(load_credentials(admin_credentials(plan)))
    bus = await connect(env["RR_NATS_URL"], node_id="bench", **auth)
    try:
        await ensure_bucket(bus, BucketSpec(name=BUCKET, replicas=3))
        await put_file(bus, BUCKET, "bench-100mb", path)
    finally:
        await bus.close()


async def fetch_one(urls: str, creds: str, dest: str, sha256: str) -> None:
    """One host's download, verified (run inside its namespace by `distribute`)."""
    bus = await connect(urls, node_id="bench-fetch", **connect_options(load_credentials(creds)))
    try:
        await fetch_to_file(bus, BUCKET, "bench-100mb", Path(dest), expect_sha256=sha256)
    finally:
        await bus.close()


def distribute(plan: FleetPlan, path: Path, sha256: str) -> float:
    """Seconds for every worker host to fetch and verify the object at once."""
    env = operator_env(plan)
    hosts = [h for h in plan.hosts if h.kind == "worker"]
    started = time.monotonic()
    procs = [subprocess.Popen(["ip", "netns", "exec", h.namespace, sys.executable, "-m", "ops.bench.bench_fleet", "fetch",
                               env["RR_NATS_URL"], str(admin_credentials(plan)), str(h.path("tmp", "bench.bin")), sha256],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for h in hosts]
    if any(p.wait(timeout=600) != 0 for p in procs):
        raise RuntimeError("a host's fetch failed")
    return time.monotonic() - started


def copy_n(path: Path, dests: list[Path]) -> float:
    """Seconds for `cp` of the file into each of `dests`."""
    started = time.monotonic()
    for dest in dests:
        subprocess.run(["cp", str(path), str(dest)], check=True)
    return time.monotonic() - started


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Both loops, then the distribution; one JSON line."""
    work = Path(tempfile.mkdtemp(prefix="rr-bench-fleet-"))
    root = work / "fleet"
    result: dict[str, Any] = {"bench": "fleet", "workers": args.workers, "size_mb": args.size_mb}
    try:
        if not args.skip_single:
            log("bench_fleet: rr up on one host ...")
            result["single_first_install_s"] = round(single_loop(work, args.timeout), 1)
        log("bench_fleet: fleet ...")
        seconds, plan = fleet_loop(root, args.workers, args.timeout)
        result["fleet_first_install_s"] = round(seconds, 1)
        result["fleet_hosts"] = len(plan.hosts)
        blob = work / "model.bin"
        blob.write_bytes(os.urandom(args.size_mb << 20))
        sha256 = hashlib.sha256(blob.read_bytes()).hexdigest()
        asyncio.run(upload(plan, blob))
        result["distribution_s"] = round(distribute(plan, blob, sha256), 2)
        copies = [work / f"cp-{i}.bin" for i in range(args.workers)]
        result["cp_s"] = round(copy_n(blob, copies), 2)
        result["ratio"] = round(result["cp_s"] / result["distribution_s"], 3)
    finally:
        subprocess.run([sys.executable, "-m", "ops.fleet", "--root", str(root), "down"], capture_output=True, timeout=180)
        shutil.rmtree(work, ignore_errors=True)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--skip-single", action="store_true", help="only the fleet side")
    return parser.parse_args()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "fetch":
        asyncio.run(fetch_one(*sys.argv[2:]))
    else:
        emit(main(parse_args()))
