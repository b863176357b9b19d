"""A worker's first start on a log whose head retention trimmed: seeded from the leaders' cluster snapshot, against without.

The log is bench_projection's fleet mix (`--events` records, an election every ~30k); the leaders'
cluster fold of it is saved as a snapshot `--after` records before the end, and RR_EVENTS is then
trimmed to its newest `--keep` records (RR_CONTEXT caught up first). Rounds alternate, on one server:
seeded:    `FenceFeed.prime` without a saved fence, as a first start on a trimmed log is now (the
           read of the retained log, the snapshot's fence folded on beside it, the checks);
retained:  the same with no snapshot to seed from: the fold of the retained log alone, as every
           first start on a trimmed log was (the ceiling).
`ratio` is seeded / retained (medians). The seeded fence must know more elections than the other.
Run: python -m ops.bench.bench_worker_trimmed [--events 300000] [--keep 150000] [--after 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import nats.errors

from eventbus.connection import Bus
from eventbus.history import first_sequence, last_sequence
from eventbus.streams import CONTEXT_STREAM, EVENTS_STREAM, StreamSettings
from ops.bench.bench_projection import fleet_log
from ops.bench.bench_timeline import served
from ops.bench.bench_worker_prime import _publish
from ops.bench.common import emit, fresh_events_stream, log, server_version
from projections import cluster
from servicekit.rebuild import state_at_seq
from servicekit.snapshotting import save_state
from services.worker import snapshotseed
from services.worker.fencefeed import FenceFeed


async def build(bus: Bus, events: int, keep: int, after: int) -> int:
    """The trimmed log and the leaders' cluster snapshot `after` records before its end; the snapshot's position."""
    await fresh_events_stream(bus, StreamSettings())
    records = fleet_log(events)
    await _publish(bus, records, events - after)
    leaders = (await state_at_seq(bus, cluster.PROJECTION, use_snapshot=False)).state
    await save_state(bus, cluster.PROJECTION, leaders)
    await _publish(bus, records, after)
    while (info := await bus.js.stream_info(CONTEXT_STREAM)).sources and info.sources[0].lag:
        await asyncio.sleep(1)  # the server copies the context asynchronously
    stream = await bus.js.stream_info(EVENTS_STREAM)
    stream.config.max_msgs = keep
    with contextlib.suppress(nats.errors.TimeoutError):  # dropping half a long log can outlast the API's timeout
        await bus.js.update_stream(stream.config)
    while (await bus.js.stream_info(EVENTS_STREAM)).state.messages > keep:
        await asyncio.sleep(1)
    return int(leaders.last_seq)


async def _primed(bus: Bus, seeded: bool) -> tuple[float, str, int]:
    real = snapshotseed.load

    async def none(*_: Any) -> None:
        return None

    snapshotseed.load = real if seeded else none  # type: ignore[assignment]
    try:
        feed = FenceFeed(bus, ("assignments", "cancels"))
        clock = time.perf_counter()
        await feed.prime(())
        return time.perf_counter() - clock, feed.primed_by, len(feed.fence("cancels").view().role_of)
    finally:
        snapshotseed.load = real


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    times: dict[str, list[float]] = {"seeded": [], "retained": []}
    with tempfile.TemporaryDirectory(prefix="worker-trimmed-") as store:
        async with served(Path(store), built=False) as (_, bus):
            position = await build(bus, args.events, args.keep, args.after)
            first, end = await first_sequence(bus), await last_sequence(bus)
            log(f"log {first:,}..{end:,}, the cluster snapshot at {position:,}")
            known: dict[str, tuple[str, int]] = {}
            for round_ in range(args.rounds):
                for side in ("seeded", "retained") if round_ % 2 == 0 else ("retained", "seeded"):
                    took, primed_by, elections = await _primed(bus, side == "seeded")
                    times[side].append(took)
                    known[side] = (primed_by, elections)
                log(f"round {round_ + 1}: " + ", ".join(f"{side} {t[-1]:.3f} s" for side, t in times.items()))
    assert known["seeded"][0] == "snapshot" and known["seeded"][1] > known["retained"][1], known
    return {
        "bench": "worker_trimmed", "events": args.events, "keep": args.keep, "snapshot_behind": end - position,
        "elections_seeded": known["seeded"][1], "elections_retained": known["retained"][1], "rounds": args.rounds,
        **{f"{side}_s": [round(t, 3) for t in taken] for side, taken in times.items()},
        "ratio": round(statistics.median(times["seeded"]) / statistics.median(times["retained"]), 3),
        "load_average": [round(x, 2) for x in os.getloadavg()], "nats_server": server_version(),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--keep", type=int, default=150_000, help="records RR_EVENTS keeps after the trim")
    parser.add_argument("--after", type=int, default=20_000, help="records stored after the cluster snapshot")
    parser.add_argument("--rounds", type=int, default=5)
    emit(await measure(parser.parse_args()))


if __name__ == "__main__":
    asyncio.run(main())
