"""Model distribution: a 100 MB model to 10 nodes, aggregate MB/s, against nats-py's own get and plain cp.

ours:    10 distributor agents (services/distributor/agent.py, each with its own connection and
         models dir) in 2 worker processes; a round publishes MODEL_PROMOTED and ends when the
         10th MODEL_DISTRIBUTED reaches this process: download, SHA-256, fsync, atomic install.
ceiling: nats-py `ObjectStore.get(name, writeinto=file)` (it checks the digest, no fsync), 10
         gets on 10 connections in 2 processes, all started at once; and plain `cp` of the
         file 10 times (no network, no hash, no fsync: the disk's own ceiling).
Also, in this process, one stream alone: our `fetch_to_file` (verified, fsynced) against one
nats-py get: what a real node, downloading only its own copy, sees.
For the two 10-copy sides it also reports CPU per MB delivered, of their client processes and of
the nats-server (user + system, from psutil): the load on these shared cores moves it less than MB/s.
Rounds alternate which side goes first. The model is uploaded once per round (a new model id),
and that upload's MB/s is reported too. Before each side the page cache is written out (`sync`,
untimed), so that no side's fsyncs wait for the gigabyte another side left dirty.
Run: python -m ops.bench.bench_distribution [--mb 100] [--agents 10] [--processes 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.metadata
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]

from config.sections.distribution import DistributionSettings
from eventbus.connection import Bus, connect
from eventbus.events import LeaderElected, ModelDistributed, ModelPromoted, decode
from eventbus.follow import follow
from eventbus.history import Record
from eventbus.objects import BucketSpec, ensure_bucket, fetch_to_file, put_file
from eventbus.publisher import Publisher
from eventbus.streams import StreamSettings, provision
from ops.bench.common import bench_bus, bench_server, emit, log, server_version

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "rr_models"
MB = 1_000_000


# ---- worker processes ------------------------------------------------------------------


async def run_agents(url: str, nodes: list[str], folder: Path) -> None:
    """Distributor agents for `nodes` until stdin closes."""
    from services.distributor.agent import DistributorAgent

    settings = DistributionSettings(keep_last=0, free_margin_mb=1.0, retry_initial_s=0.2, check_interval_s=5.0)
    buses = [await connect(url, node_id=n) for n in nodes]
    stopping = asyncio.Event()
    agents = [DistributorAgent(b, Publisher(b), b.node_id, folder / b.node_id, settings) for b in buses]
    tasks = [asyncio.ensure_future(a.run(stopping)) for a in agents]
    await asyncio.gather(*(a.ready.wait() for a in agents))
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
    stopping.set()
    await asyncio.gather(*tasks)
    for b in buses:
        await b.close()


async def run_gets(url: str, count: int, folder: Path) -> None:
    """On each 'go <name>' line: `count` concurrent nats-py gets on their own connections; prints seconds."""
    import nats

    clients = [await nats.connect(url) for _ in range(count)]
    stores = [await c.jetstream().object_store(BUCKET) for c in clients]
    print("ready", flush=True)
    while line := await asyncio.to_thread(sys.stdin.readline):
        name = line.split()[1]

        async def get(i: int, store: object, name: str = name) -> None:
            with open(folder / f"get-{os.getpid()}-{i}", "wb") as out:
                await store.get(name, writeinto=out)  # type: ignore[attr-defined]

        started = time.perf_counter()
        await asyncio.gather(*(get(i, s) for i, s in enumerate(stores)))
        print(f"done {time.perf_counter() - started:.6f}", flush=True)
    for c in clients:
        await c.close()


# ---- the parent ------------------------------------------------------------------------


def spawn(args: list[str]) -> subprocess.Popen[str]:
    """A worker process of this module, waited on until it says ready."""
    proc = subprocess.Popen([sys.executable, "-m", "ops.bench.bench_distribution", *args], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"worker {args} did not start")
    return proc


class Arrivals:
    """Counts MODEL_DISTRIBUTED per model as the log delivers them."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.longest_install: dict[str, float] = {}  # model -> the slowest agent's own download-to-install seconds
        self.changed = asyncio.Event()

    def __call__(self, record: Record) -> None:
        model = record.subject.split(".")[3]
        self.counts[model] = self.counts.get(model, 0) + 1
        event = decode(record.data)
        if isinstance(event, ModelDistributed):
            self.longest_install[model] = max(self.longest_install.get(model, 0.0), event.seconds)
        self.changed.set()

    async def wait(self, model: str, count: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.counts.get(model, 0) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.1, deadline - time.monotonic()))


async def ours(bus: Bus, arrivals: Arrivals, model: str, sha: str, size: int, agents: int) -> float:
    """Seconds from MODEL_PROMOTED to the last MODEL_DISTRIBUTED."""
    publisher = Publisher(bus)
    # Agents take only a promotion of a term they have seen elected (a decision without an epoch is no leader's).
    await publisher.publish(LeaderElected(role="scheduler", node=bus.node_id, epoch=1))
    started = time.perf_counter()
    await publisher.publish(ModelPromoted(model_id=model, board_type="hex8", num_players=2, sha256=sha, size_bytes=size, epoch=1))
    await arrivals.wait(model, agents)
    return time.perf_counter() - started


def natspy(getters: list[subprocess.Popen[str]], model: str) -> float:
    """Seconds until every getter process finished its gets (blocking)."""
    started = time.perf_counter()
    for proc in getters:
        assert proc.stdin is not None
        proc.stdin.write(f"go {model}\n")
        proc.stdin.flush()
    for proc in getters:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith("done"):
            raise RuntimeError("a nats-py getter failed")
    return time.perf_counter() - started


async def single_ours(bus: Bus, model: str, sha: str, size: int, folder: Path) -> float:
    """Seconds for one verified, fsynced download with our reader."""
    started = time.perf_counter()
    await fetch_to_file(bus, BUCKET, model, folder / "single-ours", expect_sha256=sha, expect_size=size)
    return time.perf_counter() - started


async def single_natspy(bus: Bus, model: str, folder: Path) -> float:
    """Seconds for one nats-py get into a file."""
    store = await bus.js.object_store(BUCKET)
    started = time.perf_counter()
    with open(folder / "single-natspy", "wb") as out:
        await store.get(model, writeinto=out)
    return time.perf_counter() - started


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (their threads included) so far."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def copies(source: Path, folder: Path, count: int) -> float:
    """Seconds for `count` plain cp of the file (blocking)."""
    started = time.perf_counter()
    for i in range(count):
        subprocess.run(["cp", str(source), str(folder / f"cp-{i}")], check=True)
    return time.perf_counter() - started


async def bench(args: argparse.Namespace) -> None:
    size = args.mb * MB
    with tempfile.TemporaryDirectory(prefix="rr-bench-dist-") as tmp:
        folder = Path(tmp)
        source = folder / "model.pth"
        source.write_bytes(os.urandom(size))
        sha = hashlib.sha256(source.read_bytes()).hexdigest()
        async with bench_server() as server, bench_bus(server.url) as bus:
            await provision(bus.js, StreamSettings())
            await ensure_bucket(bus, BucketSpec(name=BUCKET))
            per = -(-args.agents // args.processes)
            names = [f"node{i:02d}" for i in range(args.agents)]
            groups = [names[i : i + per] for i in range(0, len(names), per)]
            (folder / "cp").mkdir()
            (folder / "get").mkdir()
            workers = [spawn(["--worker", "agents", "--url", server.url, "--dir", str(folder / "nodes"), *g]) for g in groups]
            getters = [spawn(["--worker", "gets", "--url", server.url, "--dir", str(folder / "get"), "--count", str(len(g))])
                       for g in groups]
            arrivals = Arrivals()
            follower = asyncio.ensure_future(follow(bus, arrivals, subject="rr.evt.model.*.MODEL_DISTRIBUTED.*"))
            times: dict[str, list[float]] = {"ours": [], "natspy_get": [], "cp": [], "single_ours": [], "single_natspy_get": []}
            uploads: list[float] = []
            # ms of CPU per MB delivered, client processes and server, for the sides that run in worker processes
            clients = {"ours": [p.pid for p in workers], "natspy_get": [p.pid for p in getters]}
            cpu: dict[str, list[float]] = {f"{side}_{who}": [] for side in clients for who in ("client", "server")}
            server_pid = server.pid or 0
            try:
                for r in range(args.rounds):
                    model = f"bench-{r}"
                    started = time.perf_counter()
                    await put_file(bus, BUCKET, model, source)
                    uploads.append(time.perf_counter() - started)
                    sides = {
                        "ours": lambda: ours(bus, arrivals, model, sha, size, args.agents),  # noqa: B023
                        "natspy_get": lambda: asyncio.to_thread(natspy, getters, model),  # noqa: B023
                        "cp": lambda: asyncio.to_thread(copies, source, folder / "cp", args.agents),
                        "single_ours": lambda: single_ours(bus, model, sha, size, folder),  # noqa: B023
                        "single_natspy_get": lambda: single_natspy(bus, model, folder),  # noqa: B023
                    }
                    order = list(sides)[r % len(sides) :] + list(sides)[: r % len(sides)]
                    for name in order:
                        # Untimed: the previous side's dirty pages go to disk now, not inside this side's fsyncs.
                        await asyncio.to_thread(os.sync)
                        before = (cpu_seconds(clients.get(name, [])), cpu_seconds([server_pid]))
                        seconds = await sides[name]()
                        times[name].append(seconds)
                        copies_made = 1 if name.startswith("single") else args.agents
                        if name in clients:
                            delivered_mb = copies_made * size / MB
                            cpu[f"{name}_client"].append(1e3 * (cpu_seconds(clients[name]) - before[0]) / delivered_mb)
                            cpu[f"{name}_server"].append(1e3 * (cpu_seconds([server_pid]) - before[1]) / delivered_mb)
                        # An agent's own seconds, from its download to its install: the rest of the round is reaction time.
                        slowest = f", slowest agent {arrivals.longest_install[model]:.2f}s" if name == "ours" else ""
                        log(f"round {r + 1}/{args.rounds} {name}: {copies_made * size / MB / seconds:,.0f} MB/s ({seconds:.2f}s{slowest})")
            finally:
                follower.cancel()
                for proc in workers + getters:
                    assert proc.stdin is not None
                    proc.stdin.close()
                for proc in workers + getters:
                    proc.wait(60)
    emit(summary(times, uploads, cpu, args, size))


def summary(
    times: dict[str, list[float]], uploads: list[float], cpu: dict[str, list[float]], args: argparse.Namespace, size: int
) -> dict[str, object]:
    rate = {name: round((1 if name.startswith("single") else args.agents) * size / MB / statistics.median(t), 1)
            for name, t in times.items()}
    return {
        "bench": "distribution", "model_mb": args.mb, "agents": args.agents, "processes": args.processes,
        "ours_mb_s": rate["ours"], "natspy_get_mb_s": rate["natspy_get"], "cp_mb_s": rate["cp"],
        "ratio_vs_natspy_get": round(rate["ours"] / rate["natspy_get"], 3),
        "ratio_vs_cp": round(rate["ours"] / rate["cp"], 3),
        "single_ours_mb_s": rate["single_ours"], "single_natspy_get_mb_s": rate["single_natspy_get"],
        "single_ratio": round(rate["single_ours"] / rate["single_natspy_get"], 3),
        "upload_mb_s": round(size / MB / statistics.median(uploads), 1),
        "cpu_ms_per_mb": {name: round(min(values), 3) for name, values in cpu.items()},  # best round: the least disturbed
        "rounds_s": {name: [round(s, 3) for s in t] for name, t in times.items()},
        "nats_server": server_version(), "nats_py": importlib.metadata.version("nats-py"), "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="model size in MB")
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", choices=("agents", "gets"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("nodes", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "agents":
        asyncio.run(run_agents(args.url, args.nodes, args.dir))
    elif args.worker == "gets":
        asyncio.run(run_gets(args.url, args.count, args.dir))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
