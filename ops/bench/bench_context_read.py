"""A work item's context read from RR_CONTEXT holding a year's copies, beside the same records' raw direct gets.

At a year's log (22M records) RR_CONTEXT holds ~330k copies (1.5%: leadership, lease copies,
membership). This builds a log whose RR_CONTEXT holds `--copies` of them without the other 98.5%:
every other record is a host's membership, so RR_EVENTS is twice as long as RR_CONTEXT, and a range
of `--span` RR_EVENTS records holds as many copies as a 1.5% log's range of ~15k (an item's context
from its cluster snapshot to past its last record). Each round serves the store from a fresh
nats-server (cold blocks) and times, for `--ranges` random ranges:
ours:     `contextread.read` of leadership and two nodes' membership (stream state, the ends'
          direct gets, one consumer on RR_CONTEXT), the records as RR_EVENTS holds them;
ceiling:  raw direct gets of those records from RR_EVENTS, all at once (the least any reader fetches).
RR_EVENTS here is 2x RR_CONTEXT, not 67x: the old read's cost at a year's log is not measured here
(ops/bench/README.md has it from the 22M store).
Run: python -m ops.bench.bench_context_read [--copies 330000] [--ranges 40] [--span 450] [--store DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from cli.commands.timeline import _read_range
from cli.whatif.report import percentile
from eventbus import contextread
from eventbus.events import HostOffline, LeaderElected
from eventbus.history import last_sequence
from eventbus.publisher import Publisher
from eventbus.streams import CONTEXT_STREAM, EVENTS_STREAM, StreamSettings
from eventbus.subjects import aggregate_filter
from ops.bench.bench_projection import NODES, fleet_log
from ops.bench.bench_timeline import served
from ops.bench.common import emit, fresh_events_stream, log, server_version
from projections.timeline import LEADERSHIP


def _log(copies: int) -> list[Any]:
    """Every other record a node's membership, one election every 2,000 (the fleet mix's other events between)."""
    others = fleet_log(copies)
    out: list[Any] = []
    for i in range(copies):
        out.append(LeaderElected(role="scheduler", node=NODES[1], epoch=i, source=NODES[1]) if i % 2_000 == 0 else
                   HostOffline(node=NODES[i % len(NODES)], reason="heartbeat_timeout", silence_s=15.0, source=NODES[1]))
        out.append(next(others))
    return out


async def build(store: Path, copies: int) -> None:
    async with served(store, built=False) as (_, bus):
        await fresh_events_stream(bus, StreamSettings())
        events = _log(copies)
        for start in range(0, len(events), 5_000):
            await Publisher(bus).publish_many(events[start:start + 5_000])
            if start % 100_000 == 0:
                log(f"published {start:,} of {len(events):,}")
        while (await bus.js.stream_info(CONTEXT_STREAM)).state.messages < copies:
            await asyncio.sleep(1)


async def measure(args: argparse.Namespace, store: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    ours: list[float] = []
    ceiling: list[float] = []
    copied: list[int] = []
    for round_ in range(args.rounds):
        async with served(store) as (_, bus):
            end = await last_sequence(bus)
            for _ in range(args.ranges):
                start = rng.randrange(1, end - args.span)
                filters = (*LEADERSHIP, *(aggregate_filter("host", n) for n in rng.sample(NODES, 2)))
                clock = time.perf_counter()
                found, _read = await contextread.read(bus, filters, start, start + args.span,
                                                      lambda f, s, e: _read_range(bus, f, s, e))
                ours.append(time.perf_counter() - clock)
                clock = time.perf_counter()
                await asyncio.gather(*(bus.js.get_msg(EVENTS_STREAM, seq, direct=True) for seq in found))
                ceiling.append(time.perf_counter() - clock)
                copied.append(len(found))
        log(f"round {round_ + 1} done")
    ms = {name: [v * 1000 for v in values] for name, values in (("ours", ours), ("ceiling", ceiling))}
    result: dict[str, Any] = {"bench": "context_read", "copies": args.copies, "span": args.span, "ranges": args.ranges,
                              "rounds": args.rounds, "records_mean": round(sum(copied) / len(copied), 1)}
    for name, values in ms.items():
        result |= {f"{name}_ms_p50": round(percentile(values, 50), 1), f"{name}_ms_p99": round(percentile(values, 99), 1)}
    result["ratio_p50"] = round(result["ours_ms_p50"] / result["ceiling_ms_p50"], 2)
    result["ratio_p99"] = round(result["ours_ms_p99"] / result["ceiling_ms_p99"], 2)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["nats_server"] = server_version()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=330_000)
    parser.add_argument("--ranges", type=int, default=40)
    parser.add_argument("--span", type=int, default=450, help="RR_EVENTS records per range (half of them copies)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--store", type=Path, default=None, help="keep (or reuse) the store here")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        store = args.store or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="context-read-")))
        marker = store / f"built-{args.copies}"
        if not marker.exists():
            await build(store, args.copies)
            marker.touch()
        emit(await measure(args, store))


if __name__ == "__main__":
    asyncio.run(main())
