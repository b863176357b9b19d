"""A worker's fence primed at start: every election read from sequence 1, against from the fence its last run saved.

The log is bench_projection's fleet mix (`--events` records, an election every ~30k, spread over
all of it). The worker's previous run saved its fence `--behind` records before the end (it
stopped then; the fleet went on). Each round serves the store from a fresh nats-server (its block
cache cold) and times, alternating which goes first:
before:   `FenceFeed.prime` without a saved fence (the full read of the elections and lease copies);
after:    `FenceFeed.prime` from the saved fence (the elections after it, and the anchor's check).
Both must end with the same fence. `ratio` is after / before (medians).
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eventbus.connection import Bus
from eventbus.publisher import Publisher
from eventbus.streams import StreamSettings
from ops.bench.bench_projection import fleet_log
from ops.bench.bench_timeline import served
from ops.bench.common import emit, fresh_events_stream, log, server_version
from services.worker.fencefeed import FenceFeed

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


async def _primed(bus: Bus, saved_at: Path | None) -> tuple[float, FenceFeed]:
    feed = FenceFeed(bus, NAMES, saved_at=saved_at)
    clock = time.perf_counter()
    await feed.prime(())
    return time.perf_counter() - clock, feed


async def measure(args: argparse.Namespace, store: Path, saved_at: Path) -> dict[str, Any]:
    before: list[float] = []
    after: list[float] = []
    for round_ in range(args.rounds):
        async with served(store) as (_, bus):
            sides = [(before, None), (after, saved_at)]
            feeds: list[FenceFeed] = []
            for times, path in sides if round_ % 2 == 0 else sides[::-1]:
                took, feed = await _primed(bus, path)
                times.append(took)
                feeds.append(feed)
            assert feeds[0].fence("cancels").view() == feeds[1].fence("cancels").view(), "the primed fences differ"
            elections = len(feeds[0].fence("cancels").view().role_of)
            primed_from = max(f.primed_from for f in feeds)
        log(f"round {round_ + 1}: before {before[-1]:.3f} s, after {after[-1]:.3f} s")
    return {
        "bench": "worker_prime", "events": args.events, "behind": args.behind, "elections": elections,
        "after_primed_from": primed_from, "rounds": args.rounds,
        "before_s": [round(t, 3) for t in before], "after_s": [round(t, 3) for t in after],
        "ratio": round(statistics.median(after) / statistics.median(before), 3),
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
