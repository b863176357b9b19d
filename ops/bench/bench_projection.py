"""Projection rebuild rate against a raw ordered read of the same log, and start-up time from a snapshot.

The log: --events (default 1M) events in the mix a busy fleet writes, each by its own writer (work
lifecycles with progress, selfplay batches and their copies to the trainer, host flaps, trainings,
evaluations and promotions with a copy per node, leader changes),
published once with Publisher.publish_many in chunks.
raw:  nats-py ordered push consumer over the whole stream, counting messages (the ceiling).
read: our read path alone (history.replay handing every record to a no-op): what a rebuild pays
      before decoding and folding.
ours: the cluster projection rebuilt from sequence 1 (servicekit.rebuild.state_at_seq without
      a snapshot): history.replay, the subject check, decoding and folding what it reads.
all:  every projection together (ProjectionSet: decodes every event it reads), rebuilt the same way.
The sides alternate round by round (the order rotates), so `all_projections_ratio` is a
median against the raw reads of the same rounds. Then once: start-up with a snapshot at the end
of the log (load it + fold the empty tail) for the cluster projection and for the whole set.
Each side's process CPU per event (best round) is reported too (`*_cpu_us_per_event`, `all_cpu_ratio` =
raw / all): the server runs in another process, so it is this process's reading, decoding and folding;
the server's own CPU per event, same round, is `*_server_cpu_us_per_event`. `all` less `read` is
what decoding and folding every projection costs.
Run: python -m ops.bench.bench_projection [--events 1000000] [--rounds 3]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from eventbus import events as ev
from eventbus.connection import Bus
from eventbus.history import last_sequence, replay
from eventbus.publisher import Publisher
from eventbus.streams import EVENTS_STREAM, StreamSettings
from eventbus.subjects import ALL_EVENTS
from ops.bench.common import Stopwatch, alternate, bench_bus, bench_server, common_arguments, emit, fresh_events_stream, log, summary
from projections import bundle, cluster
from projections.base import Projection
from servicekit.rebuild import state_at_seq
from servicekit.snapshotting import save_state

GOAL = 0.6
NODES = [f"gpu-{i:02d}" for i in range(31)]
CHUNK = 50_000
DEADLINE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


TRAINER = NODES[0]  # the node that trains; every batch is copied to it


def _life(w: str, work_type: str, node: str, leader: str, epoch: int, i: int, reports: int = 6) -> list[ev.Event]:
    """One work item's life as its writers publish it: the leader adds and assigns, the node reports."""
    return [
        ev.WorkAdded(work_id=w, work_type=work_type, board_type="hex8", num_players=2, num_games=500,
                     requested_by="populator", source=leader, epoch=epoch),
        ev.WorkAssigned(work_id=w, node=node, attempt=1, deadline=DEADLINE, epoch=epoch, source=leader),
        ev.WorkStarted(work_id=w, node=node, attempt=1, pid=1000 + i % 5000, source=node),
        *(ev.WorkProgress(work_id=w, node=node, attempt=1, fraction=k / reports, message=f"step {k} of {reports}",
                          source=node) for k in range(1, reports + 1)),
        ev.WorkCompleted(work_id=w, node=node, attempt=1, duration_s=600.0, source=node),
    ]


def _job(i: int, epoch: int, leader: str, best: str | None) -> list[ev.Event]:
    """A selfplay job on a worker, its batch (played by the best model), and the batch's copy to the trainer."""
    w, node, b = f"w-{i:08d}", NODES[1 + i % (len(NODES) - 1)], f"b-{i:08d}"
    return [
        *_life(w, "selfplay", node, leader, epoch, i),
        ev.SelfplayComplete(batch_id=b, work_id=w, node=node, board_type="hex8", num_players=2, num_games=500,
                            num_samples=16000, model_id=best, attempt=1, source=node,
                            data=ev.ArtifactRef(path=f"/data/{b}.npz", size_bytes=10**7, sha256="ab" * 32)),
        ev.DataSyncPlanned(batch_id=b, transfer_id=f"x-{i:08d}", from_node=node, to_node=TRAINER, size_bytes=10**7,
                           epoch=epoch, source=leader),
        ev.DataSyncComplete(batch_id=b, transfer_id=f"x-{i:08d}", to_node=TRAINER, sha256="ab" * 32, size_bytes=10**7,
                            seconds=1.5, source=TRAINER),
    ]


def _promotion(i: int, epoch: int, leader: str, parent: str | None) -> list[ev.Event]:
    """A training item on the trainer, an evaluation item on a worker, the promotion and a copy per node."""
    m, t, e = f"m-{i:06d}", f"t-{i:08d}", f"e-{i:08d}"
    batches = [f"b-{i - k:08d}" for k in range(4)]
    evaluator = NODES[1 + (i // 200) % (len(NODES) - 1)]
    training = _life(t, "training", TRAINER, leader, epoch, i)
    training.insert(3, ev.TrainingStarted(work_id=t, node=TRAINER, board_type="hex8", num_players=2, input_batches=batches,
                                          parent_model=parent, source=TRAINER))
    out: list[ev.Event] = [
        *training,
        ev.TrainingComplete(model_id=m, work_id=t, node=TRAINER, board_type="hex8", num_players=2, input_batches=batches,
                            parent_model=parent, metrics={"loss": 0.4}, attempt=1, source=TRAINER,
                            checkpoint=ev.ArtifactRef(path=f"/models/{m}.pth", size_bytes=10**6, sha256="cd" * 32)),
        *_life(e, "evaluation", evaluator, leader, epoch, i, reports=2),
        ev.EvaluationComplete(model_id=m, work_id=e, node=evaluator, opponent=parent or "random", games=50, wins=40,
                              losses=10, win_rate=0.8, elo=1500.0, attempt=1, source=evaluator),
        ev.ModelRated(model_id=m, board_type="hex8", num_players=2, elo=100.0 + i / 200, interval=40.0, games=50,
                      evaluation_work_id=e, epoch=epoch, source=leader),
        ev.ModelPromoted(model_id=m, board_type="hex8", num_players=2, sha256="cd" * 32, size_bytes=10**6,
                         generation=i // 200 + 1, evaluation_work_id=e, previous_model=parent, epoch=epoch, source=leader),
    ]
    out += [ev.ModelDistributed(model_id=m, node=n, sha256="cd" * 32, seconds=2.0, source=n) for n in NODES]
    return out + [ev.ModelDistributionComplete(model_id=m, nodes=NODES, seconds=9.0, epoch=epoch, source=leader)]


def fleet_log(count: int) -> Iterator[ev.Event]:
    """`count` events as a 31-node fleet writes them, each by its own writer: ~15 per selfplay job (with its
    batch's copy to the trainer), a host flap every 10 jobs, a training, evaluation and promotion every 200,
    a leader change every 2000."""
    epoch, produced, i, leader, best = 1, 0, 0, NODES[1], None
    first: list[ev.Event] = [ev.LeaderElected(role="scheduler", node=leader, epoch=epoch, source=leader)]
    first += [ev.HostOnline(node=n, roles=["selfplay"], version="0.1.0", epoch=epoch, source=leader) for n in NODES]
    while True:
        batch = first
        first = []
        batch += _job(i, epoch, leader, best)
        if i % 10 == 9:
            flapping = NODES[i % len(NODES)]
            batch += [ev.HostOffline(node=flapping, reason="heartbeat_timeout", silence_s=15.0, epoch=epoch, source=leader),
                      ev.HostOnline(node=flapping, reason="heartbeat_resumed", roles=["selfplay"], version="0.1.0",
                                    epoch=epoch, source=leader)]
        if i % 200 == 199:
            batch += _promotion(i, epoch, leader, best)
            best = f"m-{i:06d}"
        if i % 2000 == 1999:
            epoch += 1
            batch += [ev.LeaderLost(role="scheduler", node=leader, reason="lease expired", source=leader)]
            leader = NODES[1 + epoch % 3]
            batch += [ev.LeaderElected(role="scheduler", node=leader, epoch=epoch, source=leader)]
        for event in batch:
            if produced == count:
                return
            produced += 1
            yield event
        i += 1


async def publish_log(bus: Bus, count: int, chunk_size: int = CHUNK) -> float:
    """Publish the fleet log in chunks; returns seconds taken."""
    publisher = Publisher(bus)
    clock, chunk = time.perf_counter(), []
    for event in fleet_log(count):
        chunk.append(event)
        if len(chunk) == chunk_size:
            await publisher.publish_many(chunk)
            chunk = []
            stored = await last_sequence(bus)
            if stored % CHUNK < chunk_size:
                log(f"published {stored:,} of {count:,}")
    if chunk:
        await publisher.publish_many(chunk)
    stored = await last_sequence(bus)
    if stored != count:
        raise RuntimeError(f"stream holds {stored} events, expected {count}")
    return time.perf_counter() - clock


async def raw_read(bus: Bus, count: int) -> float:
    """Events/s of a plain ordered push consumer over the whole stream, counting only."""
    done = asyncio.get_running_loop().create_future()
    seen = 0

    async def on_msg(_msg: Msg) -> None:
        nonlocal seen
        seen += 1
        if seen == count and not done.done():
            done.set_result(None)

    clock = Stopwatch()
    sub = await bus.js.subscribe(ALL_EVENTS, stream=EVENTS_STREAM, ordered_consumer=True, cb=on_msg,
                                 deliver_policy=DeliverPolicy.ALL)
    log(f"raw read: its consumer created after {clock.seconds():.1f}s")
    try:
        await asyncio.wait_for(done, timeout=60 + count / 5_000)
    finally:
        await sub.unsubscribe()
    return clock.rate(count)


async def read_only(bus: Bus, count: int) -> float:
    """Events/s of our read path alone: every record handed to a callback that does nothing."""
    clock = Stopwatch()
    read = await replay(bus, lambda _record: None)
    if read != count:
        raise RuntimeError(f"read {read} records, expected {count}")
    return clock.rate(count)


async def rebuild(bus: Bus, projection: Projection[Any], count: int) -> float:
    """Events/s of rebuilding `projection` from sequence 1."""
    clock = Stopwatch()
    rebuilt = await state_at_seq(bus, projection, use_snapshot=False)
    rate = clock.rate(count)
    if rebuilt.folded != count or rebuilt.state.last_seq != count:
        raise RuntimeError(f"{projection.name}: folded {rebuilt.folded}, at seq {rebuilt.state.last_seq}, expected {count}")
    return rate


async def startup(bus: Bus, projection: Projection[Any], count: int, rounds: int) -> dict[str, Any]:
    """Store a snapshot of the whole log, then time loading it and folding the (empty) tail."""
    state = (await state_at_seq(bus, projection, use_snapshot=False)).state
    size = await save_state(bus, projection, projection.finished(state))
    times = []
    for _ in range(rounds):
        clock = time.perf_counter()
        resumed = await state_at_seq(bus, projection)
        times.append(time.perf_counter() - clock)
        if (resumed.snapshot_seq, resumed.folded) != (count, 0) or resumed.state != state:
            raise RuntimeError(f"{projection.name}: start-up did not resume from the snapshot at {count}")
    return {"seconds": round(statistics.median(times), 4), "snapshot_bytes": size}


async def main() -> None:
    """Publish the log once, then alternate raw reads and cluster rebuilds, then the one-off figures."""
    parser = common_arguments(__doc__.splitlines()[0], default_events=1_000_000)
    args = parser.parse_args()
    settings = StreamSettings(storage=args.storage)
    async with bench_server() as server, bench_bus(server.url) as bus:
        await fresh_events_stream(bus, settings)
        log(f"publishing {args.events:,} events ...")
        publish_s = await publish_log(bus, args.events)
        server_pid = server.pid
        assert server_pid is not None
        cpu: dict[str, list[float]] = {"raw": [], "read": [], "ours": [], "all": []}
        server_cpu: dict[str, list[float]] = {side: [] for side in cpu}
        sides = {"raw": lambda: raw_read(bus, args.events), "read": lambda: read_only(bus, args.events),
                 "ours": lambda: rebuild(bus, cluster.PROJECTION, args.events),
                 "all": lambda: rebuild(bus, bundle.PROJECTION, args.events)}
        rates = await alternate(
            args.rounds, {side: _cpu_of(cpu[side], server_cpu[side], server_pid, run) for side, run in sides.items()},
            before_each=_nothing,
        )
        all_rate = statistics.median(rates["all"])
        log(f"every projection: {all_rate:,.0f} events/s; snapshots ...")
        cluster_start = await startup(bus, cluster.PROJECTION, args.events, args.rounds)
        all_start = await startup(bus, bundle.PROJECTION, args.events, args.rounds)
    result = summary(rates, "ours", "raw")
    emit({
        "bench": "projection_rebuild", "events": args.events, "storage": args.storage, "goal": GOAL, **result,
        "all_projections_per_s": round(all_rate), "all_projections_ratio": round(all_rate / result["raw_per_s"], 3),
        "all_rounds": [round(r) for r in rates["all"]],
        "read_per_s": round(statistics.median(rates["read"])), "read_ratio": round(statistics.median(rates["read"]) / result["raw_per_s"], 3),
        # This process's CPU per event (best round): what the neighbours' load moves little, unlike the rates.
        **{f"{side}_cpu_us_per_event": round(min(spent) / args.events * 1e6, 2) for side, spent in cpu.items()},
        # The server's, in the same round (its sending, flow control): both sides of a read pay it.
        **{f"{side}_server_cpu_us_per_event": round(server_cpu[side][spent.index(min(spent))] / args.events * 1e6, 2)
           for side, spent in cpu.items()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "all_cpu_ratio": round(min(cpu["raw"]) / min(cpu["all"]), 3),
        "startup_cluster_s": cluster_start["seconds"], "snapshot_cluster_bytes": cluster_start["snapshot_bytes"],
        "startup_all_s": all_start["seconds"], "snapshot_all_bytes": all_start["snapshot_bytes"],
        "publish_s": round(publish_s, 1),
    })


async def _nothing() -> None:
    return None


def _cpu_of(spent: list[float], served: list[float], server_pid: int,
            side: Callable[[], Awaitable[float]]) -> Callable[[], Awaitable[float]]:
    """`side`, with the CPU seconds this process and the server spend in each call appended to `spent` and `served`."""
    server = psutil.Process(server_pid)

    def server_s() -> float:
        times = server.cpu_times()
        return float(times.user + times.system)

    async def timed() -> float:
        clock, server_clock = time.process_time(), server_s()
        rate = await side()
        spent.append(time.process_time() - clock)
        served.append(server_s() - server_clock)
        return rate
    return timed


if __name__ == "__main__":
    asyncio.run(main())
