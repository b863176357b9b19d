"""Forensics at scale: point-in-time reads from kept snapshots, filtered timelines, cold starts, whatif.

The log: --events (default 300k; the issue's year is ~22M) in bench_projection's fleet mix,
published once; the API's bundle snapshot is kept every --every events (as the API and the
leader loops do), and the leader loops' own folds once at the end.
raw:      nats-py ordered push consumer over the whole stream, counting (the ceiling of a full read).
replay:   `rr replay --seq S` (projections.rebuild.state_at_seq) at --points random S: p50/p99.
timeline: `rr timeline --work W` (services.commands.timeline.read_timeline) of random items: p50/p99.
cold:     a distributor agent's catch-up (models, cluster, checkpoints, failures) from their
          snapshots plus the tail, against the same catch-up without snapshots.
whatif:   `rr whatif` over the whole log (read, record, simulate the recorded config).
Run: python -m ops.bench.bench_forensics [--events 300000] [--every 50000] [--points 10]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from typing import Any

from eventbus.history import last_sequence
from eventbus.streams import StreamSettings
from ops.bench.bench_projection import publish_log, raw_read
from ops.bench.common import bench_bus, bench_server, common_arguments, emit, fresh_events_stream, log
from projections import bundle, cluster, models
from projections.base import Folder
from projections.rebuild import state_at_seq
from projections.snapshotplan import SnapshotSettings
from projections.timeline import Selector
from services.commands.timeline import read_timeline
from services.commands.whatif import window_events
from services.distributor.folds import CHECKPOINTS, FAILURES
from services.distributor.livefold import LiveFold, aggregate_subjects
from services.scheduler.settings import SchedulerSettings
from services.snapshotting import save_state
from services.whatif.recording import record
from services.whatif.report import percentile
from services.whatif.simulate import simulate


async def keep_snapshots(bus: Any, count: int, every: int) -> None:
    """The bundle's snapshot every `every` events, each from the previous one plus its tail."""
    settings = SnapshotSettings(every_events=every, max_kept=10_000)
    for seq in range(every, count + 1, every):
        rebuilt = await state_at_seq(bus, bundle.PROJECTION, seq)
        await save_state(bus, bundle.PROJECTION, rebuilt.state, settings=settings)
        log(f"snapshot at {seq:,} (folded {rebuilt.folded:,} in {rebuilt.seconds:.1f}s)")


async def timed(action: Any) -> float:
    clock = time.perf_counter()
    await action
    return time.perf_counter() - clock


def _agent_folds() -> list[Folder[Any]]:
    return [Folder(models.PROJECTION), Folder(cluster.PROJECTION), Folder(CHECKPOINTS), Folder(FAILURES)]


async def cold_start(bus: Any) -> tuple[float, float]:
    """Seconds of an agent's catch-up without snapshots, then with them (saved in between)."""
    subjects = aggregate_subjects("model", "host", "leader")
    bare = await timed(LiveFold(bus, _agent_folds(), subjects).catch_up())
    folds = _agent_folds()
    await LiveFold(bus, folds, subjects).catch_up()
    for folder in folds:
        await save_state(bus, folder.projection, folder.projection.finished(folder.state))
    return bare, await timed(LiveFold(bus, _agent_folds(), subjects).catch_up())


async def main() -> None:
    parser = common_arguments(__doc__.splitlines()[0], default_events=300_000)
    parser.add_argument("--every", type=int, default=50_000, help="events between kept snapshots")
    parser.add_argument("--points", type=int, default=10, help="random points per measure")
    args = parser.parse_args()
    rng = random.Random(19)
    async with bench_server() as server, bench_bus(server.url) as bus:
        await fresh_events_stream(bus, StreamSettings(storage=args.storage))
        log(f"publishing {args.events:,} events ...")
        publish_s = await publish_log(bus, args.events)
        end = await last_sequence(bus)
        raw_s = args.events / await raw_read(bus, args.events)
        await keep_snapshots(bus, end, args.every)
        replays = [await timed(state_at_seq(bus, bundle.PROJECTION, rng.randrange(1, end + 1))) for _ in range(args.points)]
        items = [f"w-{rng.randrange(0, args.events // 12):08d}" for _ in range(args.points)]
        timelines = [await timed(read_timeline(bus, Selector(work=w))) for w in items]
        bare_s, snapshot_s = await cold_start(bus)
        clock = time.perf_counter()
        since = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
        rec = record(await window_events(bus, since, until), since, until)
        simulate(rec, SchedulerSettings())
        whatif_s = time.perf_counter() - clock
    emit({
        "bench": "forensics", "events": args.events, "every": args.every, "storage": args.storage,
        "raw_full_read_s": round(raw_s, 3),
        "replay_seq_p50_s": round(percentile(replays, 50), 3), "replay_seq_p99_s": round(percentile(replays, 99), 3),
        "timeline_work_p50_s": round(percentile(timelines, 50), 3), "timeline_work_p99_s": round(percentile(timelines, 99), 3),
        "cold_start_agent_bare_s": round(bare_s, 3), "cold_start_agent_snapshots_s": round(snapshot_s, 3),
        "whatif_whole_log_s": round(whatif_s, 2), "whatif_items": len(rec.arrivals), "publish_s": round(publish_s, 1),
    })


if __name__ == "__main__":
    asyncio.run(main())
