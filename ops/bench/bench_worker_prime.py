"""A worker's fence primed at start: every election read from sequence 1, against RR_CONTEXT's copies and the saved fence.

The log is bench_projection's fleet mix (`--events` records, an election every ~30k, spread over
all of it), with RR_CONTEXT's copies of its context. The worker's previous run saved its fence
`--behind` records before the end (it stopped then; the fleet went on). Each round serves the
store from a fresh nats-server (its block cache cold) and times, in a rotating order:
before:   the full read of the elections and lease copies from RR_EVENTS' sequence 1 (a first
          start without RR_CONTEXT, as every first start was);
first:    `FenceFeed.prime` without a saved fence (a first start: RR_CONTEXT's copies, RR_EVENTS after them);
after:    `FenceFeed.prime` from the saved fence (the elections after it, and the anchor's check).
All must end with the same fence. `ratio` is after / before, `first_ratio` first / before (medians).
Run: python -m ops.bench.bench_worker_prime [--events 1000000] [--behind 60000] [--rounds 3] [--store DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from eventbus.connection import Bus
from eventbus.history import last_sequence, replay
from eventbus.publisher import Publisher
from eventbus.streams import CONTEXT_STREAM, StreamSettings
from ops.bench.bench_projection import fleet_log
from ops.bench.bench_timeline import served
from ops.bench.common import emit, fresh_events_stream, log, server_version
from projections.fencing import EpochFence, FenceView
from services.worker.contextprime import FENCE_SUBJECTS
from services.worker.fencefeed import FenceFeed, PositionedFence

NAMES = ("assignments", "cancels")
CHUNK = 5_000


async def _publish(bus: Bus, events: Iterator[Any], count: int) -> None:
    """The next `count` events of the log, `CHUNK` at a time (the log is never held whole)."""
    for start in range(0, count, CHUNK):
        await Publisher(bus).publish_many(list(itertools.islice(events, min(CHUNK, count - start))))
        if start % 100_000 == 0:
            log(f"published {start:,} of {count:,}")


async def build(store: Path, events: int, behind: int, saved_at: Path) -> None:
    """The log, and the fence a worker saved `behind` records before its end."""
    records = fleet_log(events)
    async with served(store, built=False) as (_, bus):
        await fresh_events_stream(bus, StreamSettings())
        await _publish(bus, records, events - behind)
        stopped = FenceFeed(bus, NAMES, saved_at=saved_at)
        await stopped.prime(())
        await stopped.save()
        await _publish(bus, records, behind)
        while (info := await bus.js.stream_info(CONTEXT_STREAM)).sources and info.sources[0].lag:
            await asyncio.sleep(1)  # the server copies the context asynchronously


async def _primed(bus: Bus, saved_at: Path | None) -> tuple[float, FenceView, int]:
    feed = FenceFeed(bus, NAMES, saved_at=saved_at)
    clock = time.perf_counter()
    await feed.prime(())
    took = time.perf_counter() - clock
    assert feed.primed_by == ("saved" if saved_at else "context"), feed.primed_by
    return took, feed.fence("cancels").view(), feed.primed_from


async def _full_read(bus: Bus) -> tuple[float, FenceView, int]:
    fenced = PositionedFence(EpochFence(()), 0)
    clock = time.perf_counter()
    await replay(bus, fenced.learn, subjects=FENCE_SUBJECTS, start_seq=1, end_seq=await last_sequence(bus))
    return time.perf_counter() - clock, fenced.fence.view(), 1


async def measure(args: argparse.Namespace, store: Path, saved_at: Path) -> dict[str, Any]:
    times: dict[str, list[float]] = {"before": [], "first": [], "after": []}
    for round_ in range(args.rounds):
        async with served(store) as (_, bus):
            sides: list[tuple[str, Callable[[], Awaitable[tuple[float, FenceView, int]]]]] = [
                ("before", lambda: _full_read(bus)), ("first", lambda: _primed(bus, None)),
                ("after", lambda: _primed(bus, saved_at))]
            views, froms = [], []
            for name, primed in sides[round_ % 3:] + sides[:round_ % 3]:
                took, view, primed_from = await primed()
                times[name].append(took)
                views.append(view)
                froms.append(primed_from)
            assert all(v == views[0] for v in views), "the primed fences differ"
            elections = len(views[0].role_of)
        log(f"round {round_ + 1}: " + ", ".join(f"{name} {t[-1]:.3f} s" for name, t in times.items()))
    before = statistics.median(times["before"])
    return {
        "bench": "worker_prime", "events": args.events, "behind": args.behind, "elections": elections,
        "after_primed_from": max(froms), "rounds": args.rounds,
        **{f"{name}_s": [round(t, 3) for t in taken] for name, taken in times.items()},
        "ratio": round(statistics.median(times["after"]) / before, 3),
        "first_ratio": round(statistics.median(times["first"]) / before, 3),
        "load_average": [round(x, 2) for x in os.getloadavg()], "nats_server": server_version(),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--behind", type=int, default=60_000, help="records stored after the saved fence")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", type=Path, default=None, help="keep (or reuse) the store here")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        store = args.store or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="worker-prime-")))
        saved_at = store / f"fence-{args.events}-{args.behind}.json"
        if not saved_at.exists():
            await build(store, args.events, args.behind, saved_at)
        emit(await measure(args, store, saved_at))


if __name__ == "__main__":
    asyncio.run(main())
