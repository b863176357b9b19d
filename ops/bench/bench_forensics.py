"""Forensics at scale: point-in-time reads from kept snapshots, filtered timelines, cold starts, whatif, quarantine.

The log: --events (default 300k; the issue's year is ~22M, 60k a day) in bench_projection's fleet
mix (each event published by its own writer), published once with publish_many. Then one pass
folds it in order (ops/bench/forensics_log.py): the API's bundle snapshot is due every --every
events (default: the API's `api.snapshot_every_events`, 10k), but only those the byte budget
(--max-gib, `snapshots.max_gib`) still keeps at the log's end are written, and the bucket is
thinned as the services' saves thin it; the others the services would have written and thinned
out on the way. The same pass takes each service's own folds (and the assigner's queue)
`snapshots.every_events` (50k) before the end (the worst case: a snapshot is due every that many
events), saved after the distributor agent's catch-up without them is timed.
raw:      nats-py ordered push consumer over the whole stream, counting (the ceiling of a full read,
          which is what every question costs without snapshots or subject filters).
replay:   `rr replay --at T` (servicekit.rebuild.state_at_time) at --points random points and `--seq S` at
          --seq-points of them.
timeline: `rr timeline --work W` of random items, `--node N` of --node-points workers (read_timeline;
          not a goal, and it reads a fifth of the log: use 1 or 0 at a year's scale).
cold:     each service's catch-up from its snapshots plus the tail: the API's bundle, the assigner's
          queue, a distributor agent, the leader's distribution loop, a sync agent, the sync planner;
          the distributor agent also without snapshots.
whatif:   `rr whatif --since <one day of events ago>`: read the window, record it, simulate the recorded config.
quarantine: OUTPUTS_QUARANTINED of the trainer since 3/4 of the log, to the distribution loop's rollback
          MODEL_PROMOTED published (its fold caught up, the taint closure, the decision); installing the
          model on the nodes is bench_distribution's and bench_fleet's figure.
The log's event times are its publish times: a year is published in minutes, so `--at` and the whatif
window use no clock-skew margin (the commands' 5 minutes would span most of this compressed log).
Run: python -m ops.bench.bench_forensics [--events 300000] [--every 10000] [--points 10] [--max-gib 4] [--node-points 3]
     [--seq-points N]; at a year's scale `--node-points 1 --seq-points 5` (each point there may fold millions of records:
     the byte budget keeps few snapshots of a ~1 GB bundle).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import random
import resource
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from cli.commands.timeline import read_timeline
from cli.commands.whatif import window_events
from cli.whatif.recording import Recording, record
from cli.whatif.report import percentile
from cli.whatif.simulate import Outcome, simulate
from cluster.distribution.failures import FAILURES
from config.sections.api import ApiSettings
from config.sections.scheduler import SchedulerSettings
from eventbus import events as ev
from eventbus.connection import Bus
from eventbus.history import last_sequence
from eventbus.integrity import decode_on
from eventbus.objects import list_objects
from eventbus.publisher import Publisher
from eventbus.snapshots import SNAPSHOT_BUCKET, parse_point
from eventbus.streams import EVENTS_STREAM, StreamSettings
from eventbus.subjects import ALL_EVENTS
from ops.bench.bench_projection import NODES, TRAINER, publish_log, raw_read
from ops.bench.common import bench_bus, bench_server, common_arguments, emit, fresh_events_stream, kept_events_stream, log
from ops.bench.forensics_log import Service, Written, exact, keep_snapshots, retrying
from projections import bundle, cluster, data, models, taint
from projections.base import Folder, Projection
from projections.snapshotchains import worst_fold
from projections.snapshotplan import SnapshotSettings
from projections.syncwork import SYNC_REQUESTS
from projections.timeline import Selector
from servicekit.livefold import LiveFold
from servicekit.rebuild import Rebuilt, state_at_seq, state_at_time
from servicekit.snapshotting import save_state
from services.api.keeper import REFS_EVERY_EVENTS
from services.distributor import agent as distributor_agent
from services.leader import distribution, queue, syncplan
from services.leader.rollback import rollback_decisions
from services.sync import agent as sync_agent

DAY = 60_000  # events a day at the README's 31-node estimate


async def timed(action: Awaitable[Any]) -> float:
    clock = time.perf_counter()
    await action
    return time.perf_counter() - clock


# Each service's catch-up: the folds it keeps and the subjects it reads (its own module's).
def _distributor_agent() -> tuple[list[Folder[Any]], tuple[str, ...]]:
    folds: list[Folder[Any]] = [Folder(models.PROJECTION), Folder(cluster.PROJECTION), Folder(FAILURES)]
    return folds, distributor_agent.CATCHUP_SUBJECTS


def _distribution_loop() -> tuple[list[Folder[Any]], tuple[str, ...]]:
    folds: list[Folder[Any]] = [Folder(models.PROJECTION), Folder(cluster.PROJECTION), Folder(taint.PROJECTION), Folder(FAILURES)]
    return folds, distribution.CATCHUP_SUBJECTS


def _sync_agent() -> tuple[list[Folder[Any]], tuple[str, ...]]:
    folds: list[Folder[Any]] = [Folder(data.PROJECTION), Folder(SYNC_REQUESTS), Folder(taint.PROJECTION)]
    return folds, sync_agent.CATCHUP_SUBJECTS


def _sync_planner() -> tuple[list[Folder[Any]], tuple[str, ...]]:
    folds: list[Folder[Any]] = [Folder(data.PROJECTION), Folder(cluster.PROJECTION), Folder(taint.PROJECTION), Folder(SYNC_REQUESTS)]
    return folds, syncplan.CATCHUP_SUBJECTS


LIVE_SERVICES: dict[str, Service] = {
    "distributor_agent": _distributor_agent, "distribution_loop": _distribution_loop,
    "sync_agent": _sync_agent, "sync_planner": _sync_planner,
}


def _assigner() -> tuple[list[Folder[Any]], tuple[str, ...]]:
    return [Folder(queue.PROJECTION)], (ALL_EVENTS,)  # it rebuilds from the whole log


SAVED_SERVICES: dict[str, Service] = {**LIVE_SERVICES, "assigner": _assigner}


async def cold_starts(bus: Bus, captured: Sequence[tuple[Projection[Any], Any]]) -> dict[str, float]:
    """Seconds of each service's catch-up from its folds saved `snapshots.every_events` back (`captured`), and the agent's without."""
    out: dict[str, float] = {}
    out["distributor_agent_bare"] = await timed(LiveFold(bus, *_distributor_agent()).catch_up())
    for projection, state in captured:
        await retrying(f"saving {projection.name}", functools.partial(save_state, bus, projection, state))
    for name, make in LIVE_SERVICES.items():
        out[name] = await timed(LiveFold(bus, *make()).catch_up())
        log(f"cold start {name}: {out[name]:.2f}s")
    out["assigner"] = await timed(state_at_seq(bus, queue.PROJECTION))
    out["api"] = await timed(state_at_seq(bus, bundle.PROJECTION))  # the kept bundle snapshots, as the API starts
    return out


async def event_at(bus: Bus, seq: int) -> ev.Event:
    """The stored event at `seq`."""
    msg = await bus.js.get_msg(EVENTS_STREAM, seq)
    assert msg.subject is not None and msg.data is not None
    return decode_on(msg.subject, msg.data, msg.headers)


async def stamp_of(bus: Bus, seq: int) -> dt.datetime:
    event = await retrying(f"reading {seq:,}", functools.partial(event_at, bus, seq))
    assert event.ts is not None
    return event.ts


async def point_in_time(bus: Bus, rng: random.Random, end: int, points: int,
                        seq_points: int | None = None) -> tuple[list[float], list[float], int]:
    """Seconds of `rr replay --at` at random points and `--seq` at `seq_points` of them (spread), and the most records one read."""
    at_s, seq_s, most = [], [], 0
    ordered = sorted(rng.randrange(1, end + 1) for _ in range(points))
    every_nth = max(1, -(-points // max(1, points if seq_points is None else seq_points)))
    for i, seq in enumerate(ordered):
        when = await stamp_of(bus, seq)
        # Tried again while JetStream does not answer (a loaded machine); `seconds` is the answered call's.
        rebuilt: Rebuilt[bundle.ProjectionSet] = await retrying(
            f"--at {seq:,}", functools.partial(state_at_time, bus, when, skew=dt.timedelta(0)))
        at_s.append(rebuilt.seconds)
        most = max(most, rebuilt.folded)
        if seq_points != 0 and i % every_nth == 0:
            by_seq = await retrying(f"--seq {seq:,}", functools.partial(state_at_seq, bus, bundle.PROJECTION, seq))
            seq_s.append(by_seq.seconds)
            most = max(most, by_seq.folded)
        log(f"point {i + 1} of {points} at {seq:,}: --at {rebuilt.seconds:.2f}s ({rebuilt.folded:,} records folded)")
    return at_s, seq_s, most


async def timelines(bus: Bus, rng: random.Random, jobs: int, points: int,
                    node_points: int = 3) -> tuple[list[float], list[float], int]:
    """Seconds of `rr timeline --work` of random items and `--node` of random workers, and the most records a node's read."""
    work = [await timed(read_timeline(bus, Selector(work=f"w-{rng.randrange(jobs):08d}"))) for _ in range(points)]
    nodes, most = [], 0
    for node in rng.sample(NODES[2:], min(node_points, points)):  # workers: not the trainer, not a leader
        clock = time.perf_counter()
        _, read = await read_timeline(bus, Selector(node=node))
        nodes.append(time.perf_counter() - clock)
        most = max(most, read)
    return work, nodes, most


async def whatif_day(bus: Bus, end: int) -> tuple[float, int]:
    """Seconds of `rr whatif --since <the last day of events>` on the recorded config, and the items it replayed."""
    clock = time.perf_counter()
    day = await whatif_window(bus, *(await last_day(bus, end)))
    return time.perf_counter() - clock, len(day.recording.arrivals)


async def last_day(bus: Bus, end: int) -> tuple[dt.datetime, dt.datetime]:
    """`--since` and `--until` of a window over the last day of events of a log ending at `end`."""
    return await stamp_of(bus, max(1, end - DAY)), dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)


class WhatIfDay(msgspec.Struct, frozen=True, kw_only=True):
    """One `rr whatif` over the last day: its seconds in all, reading the window, and what it recorded and replayed."""

    seconds: float
    read_s: float
    recording: Recording
    outcome: Outcome
    membership: str


async def whatif_window(bus: Bus, since: dt.datetime, until: dt.datetime, *, from_start: bool = False) -> WhatIfDay:
    """`rr whatif` over a window on the recorded config, timed (`from_start`: membership read from the log's start)."""
    clock = time.perf_counter()
    window = await window_events(bus, since, until, skew=dt.timedelta(0), from_start=from_start)
    read_s = time.perf_counter() - clock
    rec = record(window.events, since, until)
    outcome = simulate(rec, SchedulerSettings())
    return WhatIfDay(seconds=time.perf_counter() - clock, read_s=read_s, recording=rec, outcome=outcome,
                     membership=window.membership)


async def quarantine_to_rollback(bus: Bus, end: int) -> dict[str, Any]:
    """From OUTPUTS_QUARANTINED of the trainer to the distribution loop's rollback published, its fold already live."""
    folds, subjects = _distribution_loop()
    live = LiveFold(bus, folds, subjects)
    await live.catch_up()
    since = await stamp_of(bus, end * 3 // 4)
    clock = time.perf_counter()
    await Publisher(bus).publish(ev.OutputsQuarantined(quarantine_id="q-bench", kind="node", target=TRAINER, since=since,
                                                       reason="bench: bad trainer", requested_by="bench"))
    await live.catch_up()  # the live loop's follower: the quarantine's record
    closure_clock = time.perf_counter()
    tainted = taint.tainted(folds[2].state)
    closure_s = time.perf_counter() - closure_clock
    decisions = rollback_decisions(folds[0].state, tainted)
    for decision in decisions:
        await Publisher(bus).publish(decision)
    return {"quarantine_to_rollback_s": round(time.perf_counter() - clock, 3), "taint_closure_s": round(closure_s, 3),
            "tainted_models": len(tainted.models), "tainted_batches": len(tainted.batches),
            "tainted_evaluations": len(tainted.evaluations), "rollbacks": [(d.previous_model, d.model_id) for d in decisions]}


async def stream_bytes(bus: Bus) -> int:
    return int((await bus.js.stream_info(EVENTS_STREAM)).state.bytes)


async def snapshot_bytes(bus: Bus, every: int) -> dict[str, int]:
    """The newest kept full bundle snapshot's size, all kept snapshots' together (what the snapshots bucket holds),
    how many bundle snapshots (full and delta) are kept and the most records a point folds past a loadable one."""
    named = [(parse_point(o.name), o.size) for o in await list_objects(bus, SNAPSHOT_BUCKET)]
    kept = [(name, size) for name, size in named if name is not None]
    bundles = [(name[2], name[3], size) for name, size in kept if name[0] == bundle.PROJECTION.name]
    fulls = [(seq, size) for seq, prev, size in bundles if not prev]
    return {"bundle_snapshot_bytes": max(fulls)[1] if fulls else 0, "snapshots_kept_bytes": sum(size for _, size in kept),
            "bundle_snapshots_kept": len(bundles), "bundle_deltas_kept": len(bundles) - len(fulls),
            "worst_fold_records": worst_fold({seq: prev for seq, prev, _ in bundles}, every)}


async def main() -> None:
    parser = common_arguments(__doc__.splitlines()[0], default_events=300_000)
    parser.add_argument("--every", type=int, default=ApiSettings().snapshot_every_events,
                        help="events between kept snapshots (default: the API's snapshot_every_events)")
    parser.add_argument("--points", type=int, default=10, help="random points per measure")
    parser.add_argument("--seq-points", type=int, default=None,
                        help="of the --points, how many also time `rr replay --seq` (default: all; not a goal)")
    parser.add_argument("--node-points", type=int, default=3,
                        help="workers whose `rr timeline --node` is timed (not a goal; ~10 us a record of the log each)")
    parser.add_argument("--max-gib", type=float, default=SnapshotSettings().max_gib,
                        help="the snapshot bucket's byte budget (default: snapshots.max_gib's)")
    parser.add_argument("--delta-links", type=int, default=SnapshotSettings().delta_links,
                        help="deltas between full bundle snapshots (default: snapshots.delta_links'; 0: full snapshots only)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the server's store here; a log of --events records already there is read, not published")
    parser.add_argument("--api-timeout", type=float, default=60.0,
                        help="seconds a JetStream API call may take (a consumer's creation on a year's log under load takes more than 5)")
    args = parser.parse_args()
    # A consumer's creation that took a second or more is logged (eventbus/orderedread.py): at a year's scale it is a phase.
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("eventbus.orderedread").setLevel(logging.INFO)
    rng = random.Random(19)
    result: dict[str, Any] = {"bench": "forensics", "events": args.events, "every": args.every, "max_gib": args.max_gib,
                              "delta_links": args.delta_links, "storage": args.storage}
    async with bench_server(data_dir=args.data_dir) as server, bench_bus(server.url, args.api_timeout) as bus:
        if args.data_dir is not None and await kept_events_stream(bus, args.events, StreamSettings(storage=args.storage)):
            log(f"the {args.events:,} events kept in {args.data_dir} read again, not published")
            result["log_reused"] = True
        else:
            await fresh_events_stream(bus, StreamSettings(storage=args.storage))
            log(f"publishing {args.events:,} events ...")
            # Chunks of 5k: an event's time (stamped when its chunk is) stays within 5k records of its storage.
            result["publish_s"] = round(await publish_log(bus, args.events, chunk_size=5_000), 1)
        end = await last_sequence(bus)
        result["stream_bytes_per_event"] = round(await retrying("stream info", functools.partial(stream_bytes, bus)) / end, 1)
        raw_s = args.events / await retrying("raw read", functools.partial(raw_read, bus, args.events))
        clock = time.perf_counter()
        result["raw_full_read_s"] = round(raw_s, 3)
        log(f"raw full read {raw_s:.1f}s; keeping snapshots ...")
        every_events = SnapshotSettings().every_events
        # The work-ref position as far behind the end as the API ever leaves it between its writes.
        written, captured = await keep_snapshots(bus, end - args.every, args.every, args.max_gib, SAVED_SERVICES,
                                                 max(1, end - every_events), end - REFS_EVERY_EVENTS,
                                                 delta_links=args.delta_links)
        result |= await snapshot_bytes(bus, args.every) | _written(written)
        result["bundle_snapshots_exact"] = exact(written.density, len(written.written), result["bundle_snapshots_kept"])
        result["keep_snapshots_s"] = round(time.perf_counter() - clock, 1)
        # The quick measures first and each logged when done, the point reads last: at a year's scale a point
        # may fold millions of records, and a run stopped there still has every other figure in its log.
        log(f"kept snapshots: {_so_far(result)}; timelines ...")
        work_s, node_s, node_read = await timelines(bus, rng, end // 16, args.points, args.node_points)
        result |= _percentiles("timeline_work", work_s) | {"timeline_node_most_records": node_read}
        result |= _percentiles("timeline_node", node_s) if node_s else {}
        log(f"timelines: {_so_far(result, 'timeline_')}; cold starts ...")
        result |= {f"cold_start_{k}_s": round(v, 3) for k, v in (await cold_starts(bus, captured)).items()}
        log(f"cold starts: {_so_far(result, 'cold_start_')}; whatif ...")
        whatif_s, items = await whatif_day(bus, end)
        result |= {"whatif_day_s": round(whatif_s, 2), "whatif_items": items}
        log(f"whatif over a day {whatif_s:.1f}s; quarantine ...")
        result |= await quarantine_to_rollback(bus, end)
        log(f"quarantine: {_so_far(result, 'quarantine_', 'taint')}; points in time ...")
        at_s, seq_s, most = await point_in_time(bus, rng, end, args.points, args.seq_points)
        result |= _percentiles("replay_at", at_s) | (_percentiles("replay_seq", seq_s) if seq_s else {})
        result |= {"replay_most_records": most, "replay_seq_points": len(seq_s)}
    emit(result)


def _so_far(result: dict[str, Any], *prefixes: str) -> str:
    return json.dumps({k: v for k, v in result.items() if not prefixes or k.startswith(prefixes)}, separators=(",", ":"))


def _written(written: Written) -> dict[str, Any]:
    return {"bundle_snapshots_candidates": written.candidates, "bundle_snapshots_written": len(written.written),
            "snapshot_fold_s": round(written.fold_s, 1), "snapshot_save_s": round(written.save_s, 1),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def _percentiles(name: str, values: Sequence[float]) -> dict[str, float]:
    return {f"{name}_p50_s": round(percentile(list(values), 50), 3), f"{name}_p99_s": round(percentile(list(values), 99), 3)}


if __name__ == "__main__":
    asyncio.run(main())
