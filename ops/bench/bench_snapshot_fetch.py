"""The API's bundle snapshot fetched from a real nats-server: our load against a raw read of the same chunks.

bench_snapshot_parts times a load's CPU in process; this times the part it leaves out, the fetch.
At each `--at` point it folds bench_projection's fleet log (as bench_snapshot_parts does), saves the
bundle's snapshot to a local nats-server as the API saves it (`save_snapshot`: deflated at level 3,
1 MiB chunks), then alternates, `--rounds` times each on one connection:

ours:    `eventbus.snapshots.load_snapshot`: the object's description, its chunks, the digest
         checked, the snapshot inflated: what a service's start waits for before it decodes.
ceiling: the same object's chunks read raw with nats-py (an ordered push consumer on the chunk
         subject, the chunks kept in a list): no digest, no inflate; the floor of any reader.
nats-py: `ObjectStore.get` of the same object (digest checked), then inflated whole in a thread
         (`eventbus.snapshots.unpacked`): a service that used nats-py's own reader.

Each side's wall and process CPU (best and median of the rounds); `ratio` is the ceiling's wall
over ours (1.0: ours as fast as a raw read). `unpack_cpu_s`: the CPU of decompressing the stored object
whole in this process (best of the rounds), the part of ours' CPU that is the codec's. `--profile` also prints a cProfile of one load of ours
to stderr. `--keep DIR` keeps each point's snapshot there and reads it back in later runs instead of
folding again (the bundle's encoding must not have changed between them).
Run: python -m ops.bench.bench_snapshot_fetch --at 1000000,2000000 [--rounds 5] [--profile] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from eventbus.connection import Bus
from eventbus.objectgets import chunk_subject
from eventbus.objects import stat_object
from eventbus.snapshots import SNAPSHOT_BUCKET, load_snapshot, packed, save_snapshot, unpacked
from ops.bench.bench_snapshot_parts import folded
from ops.bench.common import bench_bus, bench_server, emit, log, server_version
from projections import bundle
from projections.snapshot import encode_snapshot

NAME = "bench-bundle"
MB = 1_000_000


async def ours(bus: Bus) -> int:
    data = await load_snapshot(bus, NAME)
    assert data is not None, "the snapshot did not load"
    return len(data)


async def raw_chunks(bus: Bus) -> int:
    """The object's chunks by an ordered consumer, nothing checked or inflated."""
    stored = await stat_object(bus, SNAPSHOT_BUCKET, NAME)
    assert stored is not None
    chunks: list[bytes] = []
    done = asyncio.get_running_loop().create_future()

    async def on_chunk(msg: Any) -> None:
        chunks.append(msg.data)
        if len(chunks) == stored.chunks and not done.done():
            done.set_result(None)

    sub = await bus.js.subscribe(chunk_subject(SNAPSHOT_BUCKET, stored.nuid), ordered_consumer=True, cb=on_chunk)
    try:
        await asyncio.wait_for(done, 60)
    finally:
        await sub.unsubscribe()
    return sum(len(c) for c in chunks)


async def natspy_get(bus: Bus) -> int:
    store = await bus.js.object_store(SNAPSHOT_BUCKET)
    result = await store.get(NAME)
    assert result.data is not None
    return len(await asyncio.to_thread(unpacked, result.data))


async def timed(action: Callable[[Bus], Awaitable[int]], bus: Bus) -> tuple[float, float]:
    """Wall and process CPU seconds of one `action`."""
    wall, cpu = time.perf_counter(), time.process_time()
    await action(bus)
    return time.perf_counter() - wall, time.process_time() - cpu


def figures(runs: list[tuple[float, float]]) -> dict[str, float]:
    walls, cpus = [w for w, _ in runs], [c for _, c in runs]
    return {"wall_best_s": round(min(walls), 4), "wall_median_s": round(statistics.median(walls), 4),
            "cpu_best_s": round(min(cpus), 4), "cpu_median_s": round(statistics.median(cpus), 4)}


async def profile(bus: Bus) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    await ours(bus)
    profiler.disable()
    log("cProfile of one load (ours), by internal time:")
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(18)


SIDES: dict[str, Callable[[Bus], Awaitable[int]]] = {"ours": ours, "ceiling": raw_chunks, "natspy": natspy_get}


async def measure(data: bytes, rounds: int, with_profile: bool) -> dict[str, Any]:
    async with bench_server() as server, bench_bus(server.url) as bus:
        await save_snapshot(bus, NAME, data)
        stored = await stat_object(bus, SNAPSHOT_BUCKET, NAME)
        assert stored is not None
        for action in SIDES.values():  # warm: the server's blocks in its cache, every code path imported
            await action(bus)
        runs: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
        for round_ in range(rounds):
            order = list(SIDES) if round_ % 2 == 0 else list(reversed(SIDES))
            for side in order:
                runs[side].append(await timed(SIDES[side], bus))
        if with_profile:
            await profile(bus)
    result = {side: figures(r) for side, r in runs.items()}
    stored_bytes = packed(data)
    unpack_cpu = []
    for _ in range(rounds):
        clock = time.process_time()
        unpacked(stored_bytes)
        unpack_cpu.append(time.process_time() - clock)
    return {"msgpack_mb": round(len(data) / MB, 2), "deflated_mb": round(stored.size / MB, 2), "chunks": stored.chunks,
            **result, "unpack_cpu_s": round(min(unpack_cpu), 4), "ratio": round(result["ceiling"]["wall_median_s"] / result["ours"]["wall_median_s"], 3),
            "cpu_per_deflated_mb_s": round(result["ours"]["cpu_median_s"] / (stored.size / MB), 4)}


def snapshots(points: list[int], keep: Path | None) -> Iterator[tuple[int, bytes]]:
    """The bundle's snapshot at each point: read from `keep` where an earlier run left it, else folded (and left there)."""
    kept = {seq: keep / f"bundle-{seq}.msgpack" for seq in points} if keep is not None else {}
    if kept and all(path.exists() for path in kept.values()):
        yield from ((seq, path.read_bytes()) for seq, path in kept.items())
        return
    for seq, state in folded(points):
        data = encode_snapshot(bundle.PROJECTION, state)
        if seq in kept:
            kept[seq].write_bytes(data)
        yield seq, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", default="1000000,2000000", help="positions to measure at, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="a cProfile of one load of ours, on stderr")
    parser.add_argument("--keep", type=Path, help="a folder to keep the folded snapshots in, and read them from")
    args = parser.parse_args()
    points = sorted(int(p) for p in args.at.split(","))
    results = []
    for seq, data in snapshots(points, args.keep):
        result = {"records": seq, **asyncio.run(measure(data, args.rounds, args.profile))}
        log(f"{seq}: {result}")
        results.append(result)
    emit({"bench": "snapshot_fetch", "nats_server": server_version(), "points": results})


if __name__ == "__main__":
    main()
