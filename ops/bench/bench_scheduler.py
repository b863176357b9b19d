"""The scheduler at fleet scale: assignment rate and latency, and rebuilding its state from a long log.

On one local nats-server:
1. --nodes HOST_ONLINE events (with resources); every node takes --slots attempts at once.
2. The assignment loop (services/leader/assigner.py, one leader term, in this process) is
   started. Paced phases first, on a fleet still idle: a separate process appends WORK_ADDED at
   each of --paced-rates items/s for --paced-seconds; WORK_ADDED -> WORK_ASSIGNED p50/p99 per rate
   (event timestamps, one clock): the latency an operator sees from a queue that keeps up. Then
   --items as fast as the adder can (a burst): assignments/s (items / first WORK_ADDED to last
   WORK_ASSIGNED). Ceiling: the same number of conditional appends (expected-last-subject-sequence,
   as many in flight as the assigner allows) by plain nats-py on a scratch stream, same run. The
   leader's decisions carry the fence of the bench leader's election, as a real term's do. The
   pipeline ceiling (its own server) is the burst's I/O alone by plain nats-py: the same adder,
   the log read through an ordered consumer, one fenced append per WORK_ADDED. CPU per item of
   each side (leader, adder, nats-server; the ceilings' client and server) says where the ratio goes.
3. The log is topped up to --log-events with the items' lifecycles (started, progress,
   completed). Rebuild: the assigner's own fold (history.replay into Assigner.on_record: decode,
   work + cluster folds, queue) from sequence 1, against a plain nats-py ordered consumer counting
   only (bench_projection's raw side; history.replay reads faster than it since it takes each
   message straight from the parser), with this process's CPU per event of each.
4. The rebuilt queue is saved as a snapshot and loaded again: what a new leader's start costs.
Prints one JSON line; `ratio` is rebuild rate / raw read rate, `assign_ratio` ours / ceiling,
`assign_ratio_pipeline` ours / pipeline ceiling.
Goals (issue 20): paced p99 <= 50 ms at 100/s and <= 250 ms at 1000/s; assign_ratio >= 0.5.
Run: python -m ops.bench.bench_scheduler [--nodes 1000] [--items 100000] [--log-events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats.js.errors
import psutil  # type: ignore[import-untyped,unused-ignore]
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from cluster.leadership.term import Term
from config.sections.scheduler import SchedulerSettings
from config.settings import RrConfig
from eventbus import events as ev
from eventbus.connection import Bus, connect
from eventbus.history import Record, last_sequence, replay
from eventbus.natsserver import NatsServer
from eventbus.publisher import FenceToken, Publisher
from eventbus.streams import StreamSettings, provision
from eventbus.subjects import election_filter
from ops.bench.bench_projection import raw_read
from ops.bench.common import bench_bus, bench_server, emit, log, server_version
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext
from servicekit.snapshotting import load_state, save_state
from services.leader import collector, queue
from services.leader.assigner import PUBLISH_WINDOW, Assigner

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 2000  # WORK_ADDED per publish_many (each chunk is stamped just before it is sent)
SCRATCH_STREAM = "RR_BENCH_CEILING"
LEADER_NODE = "bench-leader"


def arguments() -> argparse.Namespace:
    """The bench's knobs."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--slots", type=int, default=110, help="attempts each node takes at once (enough for every item)")
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--paced-rates", default="10,100,1000", help="items/s of each paced phase, comma-separated")
    p.add_argument("--paced-seconds", type=float, default=5.0, help="length of each paced phase")
    p.add_argument("--log-events", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=2, help="rebuild rounds per side (alternating)")
    p.add_argument("--profile", metavar="FILE", help="cProfile the burst phase (the leader's side: this process) into FILE")
    p.add_argument("--add", nargs=4, metavar=("URL", "PREFIX", "COUNT", "RATE"), help=argparse.SUPPRESS)
    return p.parse_args()


def work_added(work_id: str) -> ev.WorkAdded:
    return ev.WorkAdded(work_id=work_id, work_type="selfplay", board_type="hex8", num_players=2, num_games=200, requested_by="bench")


async def add_items(url: str, prefix: str, count: int, rate: float) -> None:
    """The adder process: `count` WORK_ADDED, as a burst (rate 0) or paced at `rate` per second."""
    bus = await connect(url, node_id="bench-adder", pending_size=64 * 1024 * 1024)
    try:
        pub = Publisher(bus)
        chunk = CHUNK if rate <= 0 else max(1, int(rate / 50))
        start = time.perf_counter()
        for first in range(0, count, chunk):
            if rate > 0:
                await asyncio.sleep(max(0.0, start + first / rate - time.perf_counter()))
            await pub.publish_many(work_added(f"{prefix}-{i:07d}") for i in range(first, min(count, first + chunk)))
    finally:
        await bus.close()


def spawn_adder(url: str, prefix: str, count: int, rate: float) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "ops.bench.bench_scheduler", "--add", url, prefix, str(count), str(rate)]
    return subprocess.Popen(command, cwd=ROOT)


async def fleet_online(bus: Bus, nodes: int) -> FenceToken:
    """The bench leader's election and `nodes` HOST_ONLINE under it; the fence its decisions carry, as a real term's do."""
    resources = ev.HostResources(cpu_count=16, memory_gb=64.0, disk_free_gb=500.0,
                                 gpus=[ev.GpuInfo(name="bench", memory_gb=24.0)])
    # The folds believe a node's HOST_ONLINE only under an epoch some election announced: the bench leader's.
    elected = ev.stamp(ev.LeaderElected(role="scheduler", node=LEADER_NODE, epoch=1), LEADER_NODE)
    published = await Publisher(bus).publish_many([elected, *(
        ev.stamp(ev.HostOnline(node=f"node-{i:05d}", reason="first_seen", roles=["mixed"], resources=resources, epoch=1), LEADER_NODE)
        for i in range(nodes))])
    return FenceToken(election_filter("scheduler"), published[0].seq)


def leader(bus: Bus, slots: int, fence: FenceToken | None = None) -> Assigner:
    """An assignment loop of one always-valid term, as the elected scheduler runs it (its decisions fenced by `fence`:
    the server checks each against the newest election, as for a real term)."""
    settings = SchedulerSettings(default_max_parallel_jobs=slots, populator_enabled=False)
    ctx = ServiceContext("scheduler", bus, RrConfig(scheduler=settings), CommonOptions(nats_url=None, node_id=LEADER_NODE, config_path=None))
    return Assigner(ctx, Term("scheduler", LEADER_NODE, 1, None, ctx.publisher, lambda: True, fence=fence), None)


def server_cpu_s(server: NatsServer) -> float:
    """CPU seconds (user + system) the nats-server process has used so far."""
    times = psutil.Process(server.pid).cpu_times()
    return float(times.user + times.system)


def reaped_children_cpu_s() -> float:
    """CPU seconds of this process's children that have ended and been waited for (the adder processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def assign_phase(
    url: str, assigner: Assigner, running: asyncio.Future[None], prefix: str, count: int, rate: float, timeout: float
) -> tuple[float, float]:
    """Run the adder process and wait until the leader has assigned all of its items; wall seconds, and
    this process's CPU seconds meanwhile (the leader's: folding, deciding, publishing; the adder runs apart)."""
    target = assigner.published + count
    start, cpu = time.perf_counter(), time.process_time()
    adder = await asyncio.to_thread(spawn_adder, url, prefix, count, rate)
    try:
        while assigner.published < target:
            if running.done():  # it never returns while its term may act: say why instead of waiting out the timeout
                raise RuntimeError(f"the assignment loop ended: {running.exception() or 'returned'}")
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{assigner.published - target + count} of {count} assigned in {timeout}s")
            await asyncio.sleep(0.05)
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        if await asyncio.to_thread(adder.wait, 60) != 0:
            raise RuntimeError("the adder process failed")


async def latencies(bus: Bus, prefix: str, placed: dict[str, tuple[str, int]]) -> tuple[list[float], float]:
    """WORK_ADDED -> WORK_ASSIGNED seconds per item of `prefix`, and items / (first added .. last assigned);
    each item's first (node, attempt) goes into `placed`."""
    added: dict[str, dt.datetime] = {}
    assigned: dict[str, dt.datetime] = {}

    def on_record(record: Record) -> None:
        if f".{prefix}-" not in record.subject:
            return
        event = ev.decode(record.data)
        if isinstance(event, ev.WorkAdded) and event.ts:
            added[event.work_id] = event.ts
        elif isinstance(event, ev.WorkAssigned) and event.ts and event.work_id not in assigned:
            assigned[event.work_id] = event.ts
            placed[event.work_id] = (event.node, event.attempt)

    await replay(bus, on_record)
    delays = sorted((assigned[w] - added[w]).total_seconds() for w in assigned if w in added)
    span = (max(assigned.values()) - min(added.values())).total_seconds()
    return delays, len(assigned) / span


def per_item_us(items: int, **cpu_s: float) -> dict[str, float]:
    """CPU microseconds per item of each named side, and their total."""
    out = {name: round(seconds / items * 1e6, 1) for name, seconds in cpu_s.items()}
    return {**out, "total": round(sum(cpu_s.values()) / items * 1e6, 1)}


def paced_prefix(rate: float) -> str:
    """Work id prefix of the paced phase at `rate` items/s (p10, p100...: none a prefix of another's `prefix-`)."""
    return f"p{rate:g}".replace(".", "_")


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of `values` seconds, in milliseconds."""
    return {q: round(percentile(values, v) * 1000, 1) for q, v in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def ceiling(bus: Bus, count: int) -> float:
    """Plain nats-py: `count` conditional appends, PUBLISH_WINDOW in flight, on a scratch stream; per second.

    Per append, the server stores one message and answers one ack; no consumer reads the stream and
    no other process adds to it. The burst it is compared with costs more per item on every side:
    the adder's WORK_ADDED is stored and acked too, and the leader receives both stored events."""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await bus.js.delete_stream(SCRATCH_STREAM)
    await bus.js.add_stream(name=SCRATCH_STREAM, subjects=["bench.ceiling.>"])
    payload = ev.encode(ev.WorkAssigned(work_id="w", node="node-0001", attempt=1, deadline=ev.utcnow(), epoch=1))

    async def one(i: int) -> None:
        headers = {"Nats-Msg-Id": f"c-{i}", "Nats-Expected-Last-Subject-Sequence": "0",
                   "Nats-Expected-Last-Subject-Sequence-Subject": f"bench.ceiling.w{i}.*.*"}
        await bus.js.publish(f"bench.ceiling.w{i}.WORK_ASSIGNED.bench", payload, headers=headers, timeout=10)

    start = time.perf_counter()
    for first in range(0, count, PUBLISH_WINDOW):
        await asyncio.gather(*(one(i) for i in range(first, min(count, first + PUBLISH_WINDOW))))
    rate = count / (time.perf_counter() - start)
    await bus.js.delete_stream(SCRATCH_STREAM)
    return rate


async def pipeline_ceiling(count: int) -> tuple[float, dict[str, float]]:
    """The burst's own I/O done by plain nats-py, on a server of its own: items/s and CPU us per item of each side.

    The same adder process appends `count` WORK_ADDED; this process reads the log through an ordered
    consumer (the WORK_ADDED and the echo of each of its own appends, as the leader does) and answers
    each WORK_ADDED with one fenced conditional append, acks counted by a reply subscription. No
    decode, no fold, no decision: what a Python leader on nats-py costs before it thinks.
    """
    async with bench_server() as server, bench_bus(server.url) as bus:
        await provision(bus.js, StreamSettings())
        fence = await fleet_online(bus, 0)
        payload = ev.encode(ev.WorkAssigned(work_id="w", node="node-00001", attempt=1, deadline=ev.utcnow(), epoch=1))
        fenced = {"Nats-Expected-Last-Subject-Sequence": str(fence.seq), "Nats-Expected-Last-Subject-Sequence-Subject": fence.subject_filter}
        inbox, counts, done = bus.nc.new_inbox(), [0, 0, 0], asyncio.Event()  # sent, acked, refused

        async def on_ack(msg: Msg) -> None:
            counts[1] += 1
            counts[2] += b'"error"' in msg.data
            if counts[1] == count:
                done.set()

        async def on_record(msg: Msg) -> None:
            parts = msg.subject.split(".")
            if parts[4] == "WORK_ADDED":
                counts[0] += 1
                await bus.nc.publish(f"rr.evt.work.{parts[3]}.WORK_ASSIGNED.raw", payload, reply=f"{inbox}.{counts[0]}",
                                     headers={"Nats-Msg-Id": f"raw:{counts[0]}", **fenced})

        await bus.nc.subscribe(f"{inbox}.*", cb=on_ack)
        following = await bus.js.subscribe("rr.evt.>", ordered_consumer=True, cb=on_record, deliver_policy=DeliverPolicy.NEW)
        start, cpu, others = time.perf_counter(), time.process_time(), (server_cpu_s(server), reaped_children_cpu_s())
        adder = await asyncio.to_thread(spawn_adder, server.url, "r", count, 0.0)
        try:
            async with asyncio.timeout(600):
                await done.wait()
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        finally:
            if await asyncio.to_thread(adder.wait, 60) != 0:
                raise RuntimeError("the adder process failed")
            await following.unsubscribe()
        assert counts[2] == 0, f"{counts[2]} of the pipeline ceiling's appends were refused"
        spent = per_item_us(count, leader=cpu, server=server_cpu_s(server) - others[0], adder=reaped_children_cpu_s() - others[1])
    return count / seconds, spent


@contextlib.contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """cProfile this process (the leader: fold, decisions, publishing; the adder runs apart) into `path`, when given."""
    if path is None:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(path)
        log(f"profile of the burst written to {path} (python -m pstats {path})")


async def top_up(bus: Bus, placed: dict[str, tuple[str, int]], total: int) -> int:
    """Append lifecycles (started, progress..., completed) of the `placed` items, on the node and attempt
    each was assigned, until the log holds about `total` events."""
    missing = total - await last_sequence(bus)
    per_item = max(2, missing // max(1, len(placed)))
    pub = Publisher(bus)
    batch: list[ev.Event] = []
    for work_id, (node, attempt) in placed.items():
        batch.append(ev.WorkStarted(work_id=work_id, node=node, attempt=attempt))
        batch += [ev.WorkProgress(work_id=work_id, node=node, attempt=attempt, fraction=k / per_item, message=f"game {k}")
                  for k in range(1, per_item - 1)]
        batch.append(ev.WorkCompleted(work_id=work_id, node=node, attempt=attempt, duration_s=60.0))
        if len(batch) >= 20_000:
            await pub.publish_many(batch)
            batch = []
    await pub.publish_many(batch)
    return await last_sequence(bus)


async def rebuild_rounds(bus: Bus, slots: int, rounds: int, events: int) -> tuple[list[float], list[float], Assigner, dict[str, float]]:
    """Seconds per round: the assigner's fold from sequence 1, and a plain nats-py ordered read counting only
    (bench_projection's raw side: the same ceiling); alternating. Also each side's CPU per event, best round."""
    ours: list[float] = []
    raw: list[float] = []
    cpu: dict[str, list[float]] = {"raw": [], "ours": []}
    rebuilt = leader(bus, slots)
    for r in range(rounds):
        for side in (("raw", "ours") if r % 2 == 0 else ("ours", "raw")):
            start, clock = time.perf_counter(), time.process_time()
            if side == "raw":
                await raw_read(bus, events)
                raw.append(time.perf_counter() - start)
            else:
                rebuilt = leader(bus, slots)
                await replay(bus, rebuilt.on_record, idle_timeout=30)
                ours.append(time.perf_counter() - start)
            cpu[side].append(time.process_time() - clock)
            log(f"rebuild round {r + 1}/{rounds} {side}: {(raw if side == 'raw' else ours)[-1]:.2f}s")
    return ours, raw, rebuilt, {side: round(min(spent) / events * 1e6, 2) for side, spent in cpu.items()}


async def snapshot_start(bus: Bus, rebuilt: Assigner) -> tuple[int, float]:
    """Save the rebuilt queue as the leader does, then time what the next leader's start costs: loading it."""
    size = await save_state(bus, queue.PROJECTION, rebuilt.state)
    start = time.perf_counter()
    loaded = await load_state(bus, queue.PROJECTION, "bench")
    seconds = time.perf_counter() - start
    assert loaded is not None and loaded.state.last_seq == rebuilt.state.last_seq
    log(f"snapshot: {size} bytes, start from it in {seconds:.2f}s")
    return size, seconds


async def idle_fleet_latency(nodes: int, slots: int, rates: list[float], seconds: float) -> dict[str, dict[str, float]]:
    """WORK_ADDED -> WORK_ASSIGNED p50/p99/max ms paced at each of `rates` on `nodes` idle nodes, on a server of its own
    (the scale curve's scheduling point, without the burst and the rebuild)."""
    async with bench_server() as server, bench_bus(server.url) as bus:
        await provision(bus.js, StreamSettings())
        fence = await fleet_online(bus, nodes)
        assigner = leader(bus, slots, fence)
        running = asyncio.ensure_future(assigner.run())
        try:
            while len(assigner.state.cluster.nodes) < nodes:
                await asyncio.sleep(0.05)
            for rate in rates:
                count = max(1, round(rate * seconds))
                log(f"{nodes} nodes, paced: {count} items at {rate:g}/s")
                await assign_phase(server.url, assigner, running, paced_prefix(rate), count, rate, timeout=600)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        return {f"{rate:g}/s": summary_ms((await latencies(bus, paced_prefix(rate), {}))[0]) for rate in rates}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.paced_rates.split(",") if r.strip()]

    def paced_count(rate: float) -> int:
        return max(1, round(rate * float(args.paced_seconds)))

    async with bench_server() as server, bench_bus(server.url) as bus:
        await provision(bus.js, StreamSettings())
        fence = await fleet_online(bus, args.nodes)
        log(f"{args.nodes} nodes online; ceiling: {args.items} conditional appends")
        ceiling_cpu = (time.process_time(), server_cpu_s(server))
        ceiling_rate = await ceiling(bus, args.items)
        ceiling_cpu = (time.process_time() - ceiling_cpu[0], server_cpu_s(server) - ceiling_cpu[1])
        log(f"pipeline ceiling: {args.items} items read and answered by plain nats-py")
        pipeline_rate, pipeline_cpu = await pipeline_ceiling(args.items)
        assigner = leader(bus, args.slots, fence)
        running = asyncio.ensure_future(assigner.run())
        try:
            while len(assigner.state.cluster.nodes) < args.nodes:
                await asyncio.sleep(0.05)
            for rate in rates:
                log(f"paced: {paced_count(rate)} items at {rate:g}/s")
                await assign_phase(server.url, assigner, running, paced_prefix(rate), paced_count(rate), rate, timeout=600)
            log(f"burst: {args.items} items")
            others = (server_cpu_s(server), reaped_children_cpu_s())
            with profiled(args.profile), collector.counted() as burst_collections:
                burst_s, burst_cpu_s = await assign_phase(server.url, assigner, running, "b", args.items, 0.0, timeout=600)
            burst_server_s, adder_s = server_cpu_s(server) - others[0], reaped_children_cpu_s() - others[1]
            log(f"burst assigned in {burst_s:.1f}s, leader CPU {burst_cpu_s:.1f}s")
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        placed: dict[str, tuple[str, int]] = {}
        burst, burst_rate = await latencies(bus, "b", placed)
        paced = {rate: (await latencies(bus, paced_prefix(rate), placed))[0] for rate in rates}
        items = [f"b-{i:07d}" for i in range(args.items)]
        items += [f"{paced_prefix(rate)}-{i:07d}" for rate in rates for i in range(paced_count(rate))]
        assert len(placed) == len(items), f"{len(placed)} of {len(items)} items assigned"
        log(f"topping the log up to {args.log_events} events")
        log_events = await top_up(bus, placed, args.log_events)
        ours, raw, rebuilt, rebuild_cpu = await rebuild_rounds(bus, args.slots, args.rounds, log_events)
        completed = rebuilt.state.work.counts.get("completed", 0)
        assert completed == len(items), f"rebuilt state has {completed} of {len(items)} items completed"
        snapshot_bytes, snapshot_start_s = await snapshot_start(bus, rebuilt)
    ours_s, raw_s = statistics.median(ours), statistics.median(raw)
    return {
        "bench": "scheduler", "nodes": args.nodes, "slots_per_node": args.slots, "items": args.items,
        "assign_per_s": round(burst_rate), "ceiling_conditional_appends_per_s": round(ceiling_rate),
        "assign_ratio": round(burst_rate / ceiling_rate, 3),
        "burst_latency_ms": summary_ms(burst), "burst_leader_cpu_us_per_item": round(burst_cpu_s / args.items * 1e6, 1),
        # What each side costs per item (CPU seconds / items), where the ratio's two rates come from:
        "burst_cpu_us_per_item": per_item_us(args.items, leader=burst_cpu_s, server=burst_server_s, adder=adder_s),
        "ceiling_cpu_us_per_append": per_item_us(args.items, client=ceiling_cpu[0], server=ceiling_cpu[1]),
        "pipeline_ceiling_per_s": round(pipeline_rate), "assign_ratio_pipeline": round(burst_rate / pipeline_rate, 3),
        "pipeline_cpu_us_per_item": pipeline_cpu,
        "burst_gc_collections": burst_collections,
        "paced_seconds": args.paced_seconds,
        "paced_latency_ms": {f"{rate:g}/s": {"items": len(paced[rate]), **summary_ms(paced[rate])} for rate in rates},
        "log_events": log_events, "rebuild_s": round(ours_s, 2), "raw_read_s": round(raw_s, 2),
        "rebuild_per_s": round(log_events / ours_s), "raw_read_per_s": round(log_events / raw_s),
        "rebuild_cpu_us_per_event": rebuild_cpu["ours"], "raw_read_cpu_us_per_event": rebuild_cpu["raw"],
        "snapshot_bytes": snapshot_bytes, "snapshot_start_s": round(snapshot_start_s, 2),
        "ratio": round(raw_s / ours_s, 3), "rebuild_rounds_s": [round(s, 2) for s in ours], "raw_rounds_s": [round(s, 2) for s in raw],
        "assigner_conflicts": assigner.conflicts, "nats_server": server_version(), "cpus": __import__("os").cpu_count(),
    }


if __name__ == "__main__":
    ARGS = arguments()
    if ARGS.add:
        url, prefix, count, rate = ARGS.add
        asyncio.run(add_items(url, prefix, int(count), float(rate)))
    else:
        emit(asyncio.run(main(ARGS)))
