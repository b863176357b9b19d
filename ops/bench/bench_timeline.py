"""`rr timeline --work` of random items on bench_forensics' log, step by step, beside the raw ceiling.

The store: --events of bench_projection's fleet mix (published in chunks of 5k as bench_forensics
publishes it), the API's bundle snapshots every --every records with their parts and the work-ref
entries, the entries' position `REFS_EVERY_EVENTS` behind the end (as far behind as the API leaves
it). `--store DIR` keeps it: a later run on the same DIR (and --events) reuses it, so that two
versions of the code can be timed on one store.
Each round serves the store from a fresh nats-server (cold message blocks, the OS's page cache
warm, as on a server that has run a while), makes one call that is not counted (a fresh server's
first waits seconds for its streams' recovery), and times, for the same --items random items:
ours:     `read_timeline(Selector(work=ID))` in this process, its steps traced: the log's end, the
          entries' position and the item's entry, each batched direct get, each consumer read (the
          index's tail by type filter, the context by aggregate filters), the cluster snapshot's
          load; the command's CPU (decode, fold, format) and nats-server's per call (/proc).
ceiling:  on another fresh server, raw nats-py direct gets, all at once, of the records the item's
          lines come from (the least any reader must fetch), cold blocks alike.
The rounds alternate which side goes first. `--process-items` also times the CLI as a process
(`python -m cli.main timeline --work ID`: its start and imports) and the import alone.
Run: python -m ops.bench.bench_timeline [--events 1000000] [--items 60] [--rounds 2] [--store /tmp/timeline-store]
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from cli.commands import timeline as command
from cli.whatif.report import percentile
from eventbus import directreads
from eventbus.connection import Bus
from eventbus.history import last_sequence
from eventbus.natsserver import NatsServer, ServerSpec, free_port
from eventbus.streams import EVENTS_STREAM, StreamSettings
from ops.bench.bench_projection import publish_log
from ops.bench.common import bench_bus, emit, fresh_events_stream, log, server_version
from ops.bench.forensics_log import keep_snapshots, retrying
from projections.timeline import Selector
from servicekit import workrefentries
from services.api.keeper import REFS_EVERY_EVENTS

GOAL_P99_MS = 200  # issue #19, in process (bench_forensics' timeline_work)


def server_cpu_s(pid: int) -> float:
    """nats-server's CPU so far: its threads' run time from /proc (nanoseconds, unlike its stat's 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


@contextlib.asynccontextmanager
async def served(store: Path, *, built: bool = True) -> AsyncIterator[tuple[NatsServer, Bus]]:
    """A fresh nats-server on `store` (kept after it stops), once its events stream answers (when `built`)."""
    server = NatsServer(ServerSpec(name="timeline-bench", port=free_port(), store_dir=str(store / "jetstream")))
    await asyncio.to_thread(server.start)
    try:
        async with bench_bus(server.url) as bus:
            if built:
                await retrying("the stream's recovery", functools.partial(bus.js.stream_info, EVENTS_STREAM))
            yield server, bus
    finally:
        await asyncio.to_thread(server.stop)


async def build(bus: Bus, events: int, every: int) -> None:
    """The log, the kept bundle snapshots and the work-ref entries, as bench_forensics builds them."""
    await fresh_events_stream(bus, StreamSettings())
    log(f"publishing {events:,} events ...")
    await publish_log(bus, events, chunk_size=5_000)
    end = await last_sequence(bus)
    await keep_snapshots(bus, end - every, every, 4.0, {}, end - every, end - REFS_EVERY_EVENTS)


class Trace:
    """The steps of one call: (step, start, end) in seconds from the call's start; patched into the command's modules."""

    def __init__(self) -> None:
        self.origin = 0.0
        self.spans: list[tuple[str, float, float]] = []
        self.records = 0

    def around(self, step: str | Callable[[dict[str, Any]], str], func: Any) -> Any:
        @functools.wraps(func)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                name = step if isinstance(step, str) else step(kwargs)
                self.spans.append((name, start - self.origin, time.perf_counter() - self.origin))
        return traced

    def install(self) -> None:
        steps: dict[str, str | Callable[[dict[str, Any]], str]] = {
            "last_sequence": "end", "position_or_none": "position", "load_listed": "snapshot",
            "replay": lambda kw: "context" if kw.get("subjects") else "tail",
            "_read_context": "context"}  # from RR_CONTEXT (its RR_EVENTS fallback is a `replay` with subjects inside it)
        for attribute, step in steps.items():  # the names the command imported: patched where it looks them up
            setattr(command, attribute, self.around(step, getattr(command, attribute)))
        workrefentries._item_entry = self.around("entry", workrefentries._item_entry)
        directreads._batch = self.around("direct", directreads._batch)

    def start(self) -> None:
        self.spans, self.origin = [], time.perf_counter()


async def ours(bus: Bus, trace: Trace, work_id: str, pid: int) -> dict[str, Any]:
    """One in-process `--work` timeline: wall, CPU (this process, nats-server), its steps and the lines' sequences."""
    cpu, served_cpu = time.process_time(), server_cpu_s(pid)
    trace.start()
    lines, read = await command.read_timeline(bus, Selector(work=work_id))
    wall = time.perf_counter() - trace.origin
    formatted = time.perf_counter()
    command.render(lines, as_json=False)
    step: dict[str, Any] = {"wall": wall, "cpu": time.process_time() - cpu, "server_cpu": server_cpu_s(pid) - served_cpu,
                            "render": time.perf_counter() - formatted, "read": read, "seqs": sorted({ln.seq for ln in lines})}
    for name in ("end", "position", "entry", "direct", "tail", "context", "snapshot"):
        spans = [(s, e) for n, s, e in trace.spans if n == name]
        step[f"{name}_n"] = len(spans)
        step[f"{name}_done"] = max((e for _, e in spans), default=0.0)
    step["trace"] = sorted(trace.spans, key=lambda s: s[1])
    return step


async def ceiling(bus: Bus, seqs: Sequence[int], pid: int) -> dict[str, float]:
    """Raw nats-py direct gets of `seqs`, all at once: wall and nats-server's CPU."""
    served_cpu, clock = server_cpu_s(pid), time.perf_counter()
    await asyncio.gather(*(bus.js.get_msg(EVENTS_STREAM, seq, direct=True) for seq in seqs))
    return {"wall": time.perf_counter() - clock, "server_cpu": server_cpu_s(pid) - served_cpu}


def process_walls(url: str, items: Sequence[str]) -> dict[str, float]:
    """Wall seconds of `rr timeline --work` as a process (median over `items`), and of its imports alone."""
    def wall(argv: list[str]) -> float:
        clock = time.perf_counter()
        subprocess.run(argv, capture_output=True, timeout=120, check=False)
        return time.perf_counter() - clock
    walls = [wall([sys.executable, "-m", "cli.main", "timeline", "--work", w, "--nats", url]) for w in items]
    imports = [wall([sys.executable, "-c", "import cli.main, cli.commands.timeline"]) for _ in items]
    return {"process_wall_p50_s": round(percentile(walls, 50), 3), "process_imports_p50_s": round(percentile(imports, 50), 3)}


def summarised(name: str, values: Sequence[float]) -> dict[str, float]:
    return {f"{name}_p50": round(percentile(list(values), 50) * 1000, 1), f"{name}_p99": round(percentile(list(values), 99) * 1000, 1)}


async def main() -> None:
    parser = __import__("argparse").ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=10_000, help="records between kept bundle snapshots")
    parser.add_argument("--items", type=int, default=60, help="random work items per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating which side runs first")
    parser.add_argument("--store", type=Path, default=None, help="keep (or reuse) the store here")
    parser.add_argument("--process-items", type=int, default=0, help="items also timed as a process")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        store = args.store or Path(stack.enter_context(__import__("tempfile").TemporaryDirectory(prefix="timeline-")))
        marker = store / f"built-{args.events}"
        if not marker.exists():
            async with served(store, built=False) as (_, bus):
                await build(bus, args.events, args.every)
            marker.touch()
        await measure(args, store)


async def measure(args: Any, store: Path) -> None:
    rng = random.Random(args.seed)
    warm_up, *items = [f"w-{rng.randrange(args.events // 16):08d}" for _ in range(args.items + 1)]
    trace = Trace()
    trace.install()
    mine: list[dict[str, Any]] = []
    raw: list[dict[str, float]] = []
    seqs: dict[str, list[int]] = {}
    result: dict[str, Any] = {"bench": "timeline_work", "events": args.events, "items": args.items, "rounds": args.rounds,
                              "goal_p99_ms": GOAL_P99_MS}
    for round_ in range(args.rounds):
        for side in (("ours", "ceiling") if round_ % 2 == 0 else ("ceiling", "ours")):
            async with served(store) as (server, bus):
                assert server.pid is not None
                # Not counted, on either side: a fresh server's first call waits for its streams' recovery (seconds).
                await command.read_timeline(bus, Selector(work=warm_up))
                for work_id in items:
                    if side == "ours":
                        step = await ours(bus, trace, work_id, server.pid)
                        seqs[work_id] = step["seqs"]
                        mine.append(step)
                    elif work_id in seqs:
                        raw.append(await ceiling(bus, seqs[work_id], server.pid))
                if side == "ours" and round_ == args.rounds - 1 and args.process_items:
                    result |= await asyncio.to_thread(process_walls, server.url, items[:args.process_items])
            log(f"round {round_ + 1} {side} done")
    result |= summarised("ours_ms", [s["wall"] for s in mine]) | summarised("ceiling_ms", [c["wall"] for c in raw])
    result["ratio_p50"] = round(result["ours_ms_p50"] / result["ceiling_ms_p50"], 2)
    result["ratio_p99"] = round(result["ours_ms_p99"] / result["ceiling_ms_p99"], 2)
    result |= summarised("ours_server_cpu_ms", [s["server_cpu"] for s in mine])
    result |= summarised("ceiling_server_cpu_ms", [c["server_cpu"] for c in raw])
    result |= summarised("ours_cpu_ms", [s["cpu"] for s in mine]) | summarised("render_ms", [s["render"] for s in mine])
    for name in ("end", "position", "entry", "direct", "tail", "context", "snapshot"):
        result |= summarised(f"{name}_done_ms", [s[f"{name}_done"] for s in mine])
        result[f"{name}_reads_mean"] = round(sum(s[f"{name}_n"] for s in mine) / len(mine), 2)
    result["lines_mean"] = round(sum(len(s["seqs"]) for s in mine) / len(mine), 1)
    result["records_read_mean"] = round(sum(s["read"] for s in mine) / len(mine), 1)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["nats_server"] = server_version()
    for step in sorted(mine, key=lambda s: s["wall"])[-3:]:  # the slowest calls, step by step, for people
        log(f"slow call {step['wall'] * 1000:.0f} ms: " + ", ".join(f"{n} {s * 1000:.0f}-{e * 1000:.0f}" for n, s, e in step["trace"]))
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
