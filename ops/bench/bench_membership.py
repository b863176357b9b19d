"""Membership at fleet scale: 1000 simulated nodes beating every 5 s against one nats-server.

ours:    the leader's membership loop (cluster/membership/monitor.py) in its own process:
         its CPU share (psutil cpu_times delta / wall) over the measured window, and, after
         ~50 random nodes stop beating mid-window, how long after the configured silence each
         HOST_OFFLINE reached a subscriber (last beat -> event received, minus the silence).
         Goal: p99 of that delay <= one heartbeat interval, and no node wrongly declared offline.
ceiling: a bare nats-py process subscribed to the same beats doing nothing with them, measured
         over the same window: what merely receiving the beats costs. `cpu_ratio` = ours / ceiling.
Beats come from two publisher processes sending pre-encoded beats (seq and time patched in)
with core publishes, each node's beat at its own phase of the interval.

--curve 1000,5000,10000: the scale curve, one JSON line. At each fleet size the run above, then
the scheduler on that many idle nodes (ops/bench/bench_scheduler.py's paced phases: WORK_ADDED
-> WORK_ASSIGNED p50/p99 at --curve-rates), and the pure costs that grow with the fleet, timed in
this process: one beat folded (decode + observe), one silence sweep over every node, one
assignment round planning a single item. `growth` divides each measure at the largest size by
the smallest, against the node ratio: 1.0 per node is linear.
Run: python -m ops.bench.bench_membership [--nodes 1000] [--interval 5] [--seconds 60] [--stop 50]
     python -m ops.bench.bench_membership --curve 1000,5000,10000 [--seconds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import psutil  # type: ignore[import-untyped,unused-ignore]

from eventbus.connection import Bus, connect
from eventbus.events import GpuInfo, HostOffline, HostResources, decode, utcnow
from eventbus.heartbeats import ALL_HEARTBEATS, Heartbeat, encode_heartbeat
from eventbus.streams import StreamSettings, provision
from eventbus.subjects import heartbeat_subject
from ops.bench.bench_failover import percentile
from ops.bench.common import bench_bus, bench_server, emit, log, server_version

ROOT = Path(__file__).resolve().parents[2]
PUBLISHERS = 2
SEQ_MARK = b"987654321987"
TS_MARK = b"2000-01-01T00:00:00Z"


class Term(msgspec.Struct, frozen=True):
    """The leadership term the loop runs under in this bench."""

    epoch: int
    role: str = "scheduler"


def node_name(index: int) -> str:
    """Simulated node id."""
    return f"sim-{index:05d}"


# ---- child processes -------------------------------------------------------------------


async def run_leader(url: str, config: str) -> None:
    """The membership loop in this process until SIGTERM; prints `ready`, then its statistics at the end."""
    from cluster.membership.monitor import MembershipMonitor
    from config.settings import load_config
    from servicekit.options import CommonOptions
    from servicekit.runtime import ServiceContext

    bus = await connect(url, node_id="bench-leader")
    ctx = ServiceContext("scheduler", bus, load_config(config), CommonOptions(nats_url=url, node_id="bench-leader", config_path=config))
    monitor = MembershipMonitor(ctx, Term(epoch=1))
    async with asyncio.TaskGroup() as tasks:
        loop_task = tasks.create_task(monitor.run())
        lag_task = tasks.create_task(ctx.loop_lag.run())
        await monitor.wait_judging(30)
        print("ready", flush=True)
        await wait_for_sigterm()
        loop_task.cancel()
        lag_task.cancel()
    stats = {**msgspec.structs.asdict(monitor.statistics()), "loop_lag_max_s": ctx.loop_lag.statistics().max_s}
    print(json.dumps(stats), flush=True)
    await bus.close()


async def run_ceiling(url: str) -> None:
    """A bare subscriber to every beat, until SIGTERM; prints `ready` then how many it received."""
    bus = await connect(url, node_id="bench-ceiling")
    received = 0

    async def on_msg(_msg: object) -> None:
        nonlocal received
        received += 1

    await bus.nc.subscribe(ALL_HEARTBEATS, cb=on_msg)
    await bus.nc.flush()
    print("ready", flush=True)
    await wait_for_sigterm()
    print(json.dumps({"received": received}), flush=True)
    await bus.close()


async def run_publisher(url: str, index: int, nodes: int, interval: float) -> None:
    """Beat for every `PUBLISHERS`-th node from `index`, each at its phase; `bench.stop.<index>` silences some."""
    bus = await connect(url, node_id=f"bench-pub-{index}", pending_size=16 * 1024 * 1024)
    mine = list(range(index, nodes, PUBLISHERS))
    started = utcnow()
    templates = {i: _template(node_name(i), interval, started) for i in mine}
    stopped: set[int] = set()

    async def on_stop(msg: object) -> None:
        stopped.update(json.loads(msg.data))  # type: ignore[attr-defined]
        await msg.respond(b"ok")  # type: ignore[attr-defined]

    await bus.nc.subscribe(f"bench.stop.{index}", cb=on_stop)
    print("ready", flush=True)
    beating = asyncio.ensure_future(_beat(bus, mine, templates, stopped, nodes, interval))
    await wait_for_sigterm()
    beating.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beating
    await bus.close()


async def _beat(bus: Bus, mine: list[int], templates: dict[int, bytes], stopped: set[int], nodes: int, interval: float) -> None:
    loop = asyncio.get_running_loop()
    start, seq = loop.time() + 0.2, 0
    while True:
        seq += 1
        for i in mine:
            delay = start + (seq - 1) * interval + i * interval / nodes - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if i not in stopped:
                data = templates[i].replace(SEQ_MARK, str(seq).encode()).replace(TS_MARK, utcnow().isoformat().encode())
                await bus.nc.publish(heartbeat_subject(node_name(i)), data)


def _template(node: str, interval: float, started: dt.datetime) -> bytes:
    beat = Heartbeat(
        node=node, ts=dt.datetime(2000, 1, 1, tzinfo=dt.UTC), seq=int(SEQ_MARK), interval_s=interval,
        resources=HostResources(cpu_count=64, cpu_percent=71.5, memory_gb=503.7, memory_percent=42.0, disk_free_gb=1200.5,
                                gpus=[GpuInfo(name="NVIDIA H100 80GB HBM3", memory_gb=79.6, utilization=93.0)] * 8),
        roles=["selfplay", "nn_training"], version="bench", started=started,
    )
    data = encode_heartbeat(beat)
    assert SEQ_MARK in data and TS_MARK in data
    return data


async def wait_for_sigterm() -> None:
    """Return when SIGTERM arrives."""
    got = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, got.set)
    await got.wait()


# ---- the coordinator -------------------------------------------------------------------


class Child:
    """A child process of this bench (one of the roles above)."""

    def __init__(self, *args: str) -> None:
        self.argv = [sys.executable, "-m", "ops.bench.bench_membership", *args]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(*self.argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)  # type: ignore[union-attr]
        if line.strip() != b"ready":
            raise RuntimeError(f"{self.argv[3:]} did not start: {line!r}")

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()  # type: ignore[union-attr]
        return float(times.user + times.system)

    async def stop(self) -> dict[str, object]:
        assert self.proc is not None and self.proc.stdout is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        out = await asyncio.wait_for(self.proc.stdout.read(), 30)
        await asyncio.wait_for(self.proc.wait(), 30)
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}


class Offlines:
    """HOST_OFFLINE and HOST_ONLINE events as a subscriber receives them."""

    def __init__(self) -> None:
        self.online = 0
        self.offline: dict[str, tuple[dt.datetime, HostOffline]] = {}

    async def on_msg(self, msg: object) -> None:
        event = decode(msg.data)  # type: ignore[attr-defined]
        if isinstance(event, HostOffline):
            self.offline[event.node] = (utcnow(), event)
        else:
            self.online += 1


async def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def coordinate(args: argparse.Namespace) -> dict[str, object]:
    silence = args.interval * args.missed
    async with bench_server() as server, bench_bus(server.url) as bus:
        await provision(bus.js, StreamSettings())
        seen = Offlines()
        await bus.nc.subscribe("rr.evt.host.>", cb=seen.on_msg)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config:
            config.write(f"membership: {{heartbeat_interval_s: {args.interval}, missed_beats_offline: {args.missed}}}\n")
            config.flush()
            leader, ceiling = Child("--role", "leader", "--nats", server.url, "--config", config.name), Child("--role", "ceiling", "--nats", server.url)
            publishers = [Child("--role", "publisher", "--nats", server.url, "--index", str(i), "--nodes", str(args.nodes),
                                "--interval", str(args.interval)) for i in range(PUBLISHERS)]
            children = [leader, ceiling, *publishers]
            try:
                for child in children:
                    await child.start()
                log(f"{args.nodes} nodes beating every {args.interval}s; waiting for them all to be online")
                await wait_until(lambda: seen.online >= args.nodes, args.interval * 4, "every node online")
                cpu = {"ours": leader.cpu_seconds(), "ceiling": ceiling.cpu_seconds()}
                window_start = time.monotonic()
                await asyncio.sleep(args.stop_after)
                victims = sorted(random.sample(range(args.nodes), args.stop))
                stopped_at = utcnow()
                for i in range(len(publishers)):
                    await bus.nc.request(f"bench.stop.{i}", json.dumps([v for v in victims if v % PUBLISHERS == i]).encode(), timeout=5)
                log(f"stopped {args.stop} nodes; measuring until {args.seconds}s")
                await asyncio.sleep(max(0.0, window_start + args.seconds - time.monotonic()))
                await wait_until(lambda: len(seen.offline) >= args.stop, silence + 3 * args.interval, "every stopped node offline")
                wall = time.monotonic() - window_start
                cpu = {k: (c.cpu_seconds() - cpu[k]) / wall for k, c in (("ours", leader), ("ceiling", ceiling))}
            finally:
                results = [await child.stop() for child in children]
    return summarize(args, seen, victims, stopped_at, cpu, wall, results[0], results[1])


def summarize(args: argparse.Namespace, seen: Offlines, victims: list[int], stopped_at: dt.datetime, cpu: dict[str, float],
              wall: float, leader: dict[str, object], ceiling: dict[str, object]) -> dict[str, object]:
    silence = args.interval * args.missed
    names = {node_name(v) for v in victims}
    delays = [(got - ev.last_seen).total_seconds() - silence for node, (got, ev) in seen.offline.items() if node in names and ev.last_seen]
    p99 = percentile(delays, 99)
    return {
        "bench": "membership", "nodes": args.nodes, "interval_s": args.interval, "silence_s": silence, "window_s": round(wall, 1),
        "beats_per_s": round(args.nodes / args.interval, 1),
        "cpu_share_ours": round(cpu["ours"], 4), "cpu_share_ceiling": round(cpu["ceiling"], 4),
        "cpu_ratio": round(cpu["ours"] / cpu["ceiling"], 2) if cpu["ceiling"] else None,
        "stopped": len(victims), "detected": len(delays), "false_offline": len(set(seen.offline) - names),
        "delay_beyond_silence_p50_s": round(percentile(delays, 50), 3), "delay_beyond_silence_p99_s": round(p99, 3),
        "delay_beyond_silence_max_s": round(max(delays), 3),
        "goal_p99_s": args.interval, "goal_met": p99 <= args.interval and len(delays) == len(victims) and set(seen.offline) <= names,
        "leader_beats": leader.get("beats"), "ceiling_beats": ceiling.get("received"),
        "leader_loop_lag_max_s": round(float(leader.get("loop_lag_max_s") or 0.0), 4),  # type: ignore[arg-type]
        "nats_server": server_version(), "cpus": psutil.cpu_count(),
    }


# ---- the scale curve --------------------------------------------------------------------

REPEATS = 5  # pure timings: the best of this many


def fold_costs(nodes: int, interval: float, beats: int = 20_000) -> dict[str, float]:
    """Per-beat fold cost (µs: decode + observe) and one sweep over `nodes` alive nodes (ms), pure, in this process."""
    from cluster.membership.core import MembershipState, observe, sweep
    from eventbus.heartbeats import decode_heartbeat

    started = utcnow()
    templates = [_template(node_name(i), interval, started) for i in range(nodes)]
    state, now = MembershipState(), 0.0
    for i, data in enumerate(templates):  # every node alive, as in the bench's steady state
        state, _ = observe(state, decode_heartbeat(data.replace(SEQ_MARK, b"1")), now + i * interval / nodes)
    per_beat = sweep_s = math.inf
    for rep in range(REPEATS):  # the best of a few: the machine is shared, and noise only ever adds
        wires = [templates[i % nodes].replace(SEQ_MARK, str(2 + rep * beats + i).encode()) for i in range(beats)]
        begin = time.perf_counter()
        for i, data in enumerate(wires):
            state, _ = observe(state, decode_heartbeat(data), (1 + rep) * interval + i * interval / beats)
        per_beat = min(per_beat, (time.perf_counter() - begin) / beats)
        begin = time.perf_counter()
        _, events = sweep(state, (1 + rep) * interval, interval * 3)
        sweep_s = min(sweep_s, time.perf_counter() - begin)
        assert not events
    return {"fold_us_per_beat": round(per_beat * 1e6, 2), "sweep_ms": round(sweep_s * 1000, 2)}


def round_cost_ms(nodes: int, slots: int) -> float:
    """One assignment round (services/leader/decisions.py) planning one pending item on `nodes` idle nodes, ms, pure."""
    from config.sections.scheduler import SchedulerSettings
    from eventbus import events as ev
    from services.leader import queue
    from services.leader.decisions import assignment_round

    settings = SchedulerSettings(default_max_parallel_jobs=slots, populator_enabled=False)
    resources = HostResources(cpu_count=16, memory_gb=64.0, disk_free_gb=500.0, gpus=[GpuInfo(name="bench", memory_gb=24.0)])
    state = queue.QueueState()
    for seq, event in enumerate(
        [ev.LeaderElected(role="scheduler", node="bench-leader", epoch=1)]
        + [ev.HostOnline(node=f"node-{i:05d}", reason="first_seen", roles=["mixed"], resources=resources, epoch=1) for i in range(nodes)]
        + [ev.WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, requested_by="bench")], start=1,
    ):
        state = queue.apply(state, ev.stamp(event, "bench-leader"), seq)
    now, best = utcnow(), math.inf
    for _ in range(REPEATS):
        begin = time.perf_counter()
        assert len(assignment_round(state, now, None, settings)) == 1
        best = min(best, time.perf_counter() - begin)
    return round(best * 1000, 2)


async def scale_curve(args: argparse.Namespace) -> dict[str, object]:
    """Membership, scheduling and their pure costs at each fleet size of --curve."""
    from ops.bench.bench_scheduler import idle_fleet_latency

    sizes = [int(n) for n in args.curve.split(",") if n.strip()]
    rates = [float(r) for r in args.curve_rates.split(",") if r.strip()]
    points = []
    for nodes in sizes:
        log(f"scale curve: {nodes} nodes, membership")
        member = await coordinate(argparse.Namespace(**{**vars(args), "nodes": nodes}))
        log(f"scale curve: {nodes} nodes, scheduling")
        # Enough slots for every paced item: the fleet stays idle, so the latency is the scheduler's alone.
        slots = 1 + sum(round(rate * args.curve_paced_seconds) for rate in rates) // nodes
        paced = await idle_fleet_latency(nodes, slots, rates, args.curve_paced_seconds)
        points.append({
            "nodes": nodes, **{k: member[k] for k in CURVE_MEMBERSHIP},
            "cpu_us_per_beat": round(float(member["cpu_share_ours"]) / float(member["beats_per_s"]) * 1e6, 1),  # type: ignore[arg-type]
            **fold_costs(nodes, args.interval), "assign_round_ms": round_cost_ms(nodes, 4), "assign_latency_ms": paced,
        })
    return {"bench": "scale", "interval_s": args.interval, "sizes": sizes, "points": points, "growth": growth(points),
            "goal_offline_p99_s": args.interval,
            "goal_met": all(p["goal_met"] for p in points), "nats_server": server_version(), "cpus": psutil.cpu_count()}


CURVE_MEMBERSHIP = ("cpu_share_ours", "cpu_share_ceiling", "cpu_ratio", "delay_beyond_silence_p50_s", "delay_beyond_silence_p99_s",
                    "detected", "false_offline", "leader_loop_lag_max_s", "goal_met")


def growth(points: list[dict[str, object]]) -> dict[str, float]:
    """Each cost at the largest size over the smallest, divided by the node ratio (1.0: linear in nodes, 0: flat)."""
    if len(points) < 2:
        return {}
    first, last = points[0], points[-1]
    scale = float(last["nodes"]) / float(first["nodes"])  # type: ignore[arg-type]
    out = {}
    for key in ("cpu_share_ours", "cpu_share_ceiling", "fold_us_per_beat", "sweep_ms", "assign_round_ms"):
        if float(first[key]):  # type: ignore[arg-type]
            out[key] = round(float(last[key]) / float(first[key]) / scale, 2)  # type: ignore[arg-type]
    return out


def main() -> None:
    """Coordinate the bench (default) or run one of its child roles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("coordinator", "leader", "ceiling", "publisher"), default="coordinator")
    parser.add_argument("--nats", help="server URL (child roles)")
    parser.add_argument("--config", help="rr config file (leader role)")
    parser.add_argument("--index", type=int, default=0, help="publisher number (publisher role)")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat interval, seconds")
    parser.add_argument("--missed", type=int, default=3, help="missed beats before offline")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window, seconds")
    parser.add_argument("--stop-after", type=float, default=30.0, help="seconds into the window when nodes stop")
    parser.add_argument("--stop", type=int, default=50, help="nodes stopped")
    parser.add_argument("--curve", help="fleet sizes of the scale curve, comma-separated (e.g. 1000,5000,10000)")
    parser.add_argument("--curve-rates", default="100,1000", help="items/s of the curve's paced scheduling phases")
    parser.add_argument("--curve-paced-seconds", type=float, default=5.0, help="length of each paced phase")
    args = parser.parse_args()
    if args.role == "leader":
        asyncio.run(run_leader(args.nats, args.config))
    elif args.role == "ceiling":
        asyncio.run(run_ceiling(args.nats))
    elif args.role == "publisher":
        asyncio.run(run_publisher(args.nats, args.index, args.nodes, args.interval))
    elif args.curve:
        emit(asyncio.run(scale_curve(args)))
    else:
        emit(asyncio.run(coordinate(args)))


if __name__ == "__main__":
    main()
