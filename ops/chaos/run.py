"""One chaos run on a fleet that is up: workload and nemesis together, then heal, drain, check and report.

The orchestration only: the schedule, the checker and the report are pure modules beside it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import msgspec

from eventbus.connection import Bus, connect
from eventbus.events import Event, WorkAdded, WorkCancelled, WorkCompleted, WorkFailed
from eventbus.history import events
from ops.chaos.check import History, read_history, read_records
from ops.chaos.checker import CheckReport, ClientRecord, check, view_hashes
from ops.chaos.nemesis import Nemesis
from ops.chaos.report import Injected, Point, Summary, points, render_timeline, summary, window
from ops.chaos.schedule import Fault, encode_schedule
from ops.chaos.workload import ClientStats, add_work
from ops.fleet.launch import admin_credentials
from ops.fleet.plan import FleetPlan
from projections import bundle
from servicekit.auth.credentials import connect_options, load_credentials
from servicekit.snapshotting import load_state

# How often the drain reads the log's new end: each read fetches only what came since, and the run ends the moment
# the last acknowledged item does (at 2 s, a smoke run waited a second on average for nothing).
DRAIN_POLL_S = 0.5


class RunSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What one run does besides its schedule."""

    seed: int
    duration_s: float
    rate_per_s: float = 0.5
    job_s: float = 1.0
    drain_timeout_s: float = 240.0


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """A finished run: its summary, the checker's report, the client's counts and what `beside` returned."""

    summary: Summary
    report: CheckReport
    client: ClientStats
    timeline: list[Point] = []
    beside: object = None


# Something else to run for the run's window (the soak's sampler): given the bus and the stop event.
Beside = Callable[[Bus, asyncio.Event], Coroutine[Any, Any, object]]


async def fleet_bus(plan: FleetPlan, node_id: str = "chaos-client") -> Bus:
    """A connection to every NATS server of the fleet with the operator's credentials."""
    auth = connect_options(load_credentials(admin_credentials(plan)))
    return await connect(plan.nats_urls(), node_id=node_id, name=f"rr-chaos:{node_id}", **auth)


async def _one_fault(nemesis: Nemesis, fault: Fault, t0: float) -> Injected:
    await asyncio.sleep(max(0.0, t0 + fault.at_s - time.monotonic()))
    injected, undo = await nemesis.inject(fault)
    _say(f"chaos: +{fault.at_s:.0f}s {fault.kind} {injected.victim or fault.target} {injected.error}".rstrip())
    if undo is not None:
        await asyncio.sleep(fault.hold_s)
        try:
            await asyncio.to_thread(undo)
        except (OSError, ValueError) as exc:  # FleetError: the heal at the end undoes what the network kept
            _say(f"chaos: undoing {fault.kind} {injected.victim}: {exc}")
            return msgspec.structs.replace(injected, ended=time.time(), undo_error=str(exc))
    return msgspec.structs.replace(injected, ended=time.time())


async def run_faults(nemesis: Nemesis, schedule: Sequence[Fault]) -> list[Injected]:
    """Every fault at its time, overlapping as scheduled; each undone after its hold."""
    t0 = time.monotonic()
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_one_fault(nemesis, fault, t0)) for fault in schedule]
    return [task.result() for task in tasks]


def terminal_ids(log: Sequence[tuple[int, Event]]) -> set[str]:
    """Work items that reached completed, failed or cancelled (pure)."""
    return {e.work_id for _, e in log if isinstance(e, (WorkCompleted, WorkFailed, WorkCancelled))}


async def drain(bus: Bus, records: Sequence[ClientRecord], timeout_s: float) -> bool:
    """Wait until every acknowledged item has ended; False when some had not after `timeout_s`."""
    log: list[tuple[int, Event]] = []
    added: dict[str, str] = {}  # event id -> work id
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async for seq, event in events(bus, start_seq=log[-1][0] + 1 if log else 1):
                if isinstance(event, Event):
                    log.append((seq, event))
                    if isinstance(event, WorkAdded):
                        added[event.id] = event.work_id
        except Exception as exc:  # noqa: BLE001 - a cluster still settling after the heal (nats' own 503s too): read again
            _say(f"chaos: reading the log while draining: {exc!r}")
        waiting = {added.get(r.id, r.id) for r in records} - terminal_ids(log)
        if not waiting:
            return True
        if time.monotonic() > deadline:
            _say(f"chaos: {len(waiting)} acknowledged item(s) still open after {timeout_s:.0f}s of draining")
            return False
        await asyncio.sleep(DRAIN_POLL_S)


async def settled_history(bus: Bus, tries: int = 10) -> History:
    """The whole history, read again while the cluster answers "temporarily unavailable" after the heal."""
    for _ in range(tries - 1):
        try:
            return await read_history(bus)
        except Exception as exc:  # noqa: BLE001 - nats-py's JetStream API errors are not translated by history reads
            _say(f"chaos: reading the history: {exc!r}; again in 3 s")
        await asyncio.sleep(3.0)
    return await read_history(bus)


async def live_views(bus: Bus, log: Sequence[tuple[int, Event]], candidates: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """The hashes of the newest bundle snapshot a live API service wrote, and of the same views rebuilt from sequence 1
    up to its position (believing the same election candidates); two empty maps when no snapshot exists yet."""
    loaded = await load_state(bus, bundle.PROJECTION, "chaos-check")
    if loaded is None:
        return {}, {}
    upto = [(seq, event) for seq, event in log if seq <= loaded.header.last_seq]
    start = bundle.believing(bundle.ProjectionSet(), candidates)
    rebuilt = await asyncio.to_thread(lambda: view_hashes(bundle.fold_all_events(upto, start)))
    return await asyncio.to_thread(view_hashes, loaded.state), rebuilt


async def chaos(root: Path, plan: FleetPlan, schedule: Sequence[Fault], settings: RunSettings, out: Path,
                beside: Beside | None = None) -> Outcome:
    """Workload and nemesis for the schedule's duration; heal; drain; check; write the report files into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "schedule.json").write_bytes(encode_schedule(schedule))
    records_path = out / "records.jsonl"
    records_path.write_bytes(b"")
    began = time.time()
    bus = await fleet_bus(plan)
    try:
        nemesis, stop = Nemesis(root, plan, bus), asyncio.Event()
        async with asyncio.TaskGroup() as group:
            client = group.create_task(add_work(bus, records_path, seed=settings.seed, rate_per_s=settings.rate_per_s,
                                                stop=stop, seconds=settings.job_s))
            watcher: asyncio.Task[object] | None = group.create_task(beside(bus, stop)) if beside is not None else None
            injected = await run_faults(nemesis, schedule)
            await asyncio.sleep(max(0.0, settings.duration_s - max((f.at_s + f.hold_s for f in schedule), default=0.0)))
            stop.set()
        await asyncio.to_thread(nemesis.heal_all)
        records = read_records(records_path)
        _say(f"chaos: healed; {len(records)} acknowledged adds, draining ...")
        since = time.monotonic()
        drained = await drain(bus, records, settings.drain_timeout_s)
        _say(f"chaos: drain ended after {time.monotonic() - since:.1f}s; reading the whole history ...")
        history = await settled_history(bus)
        live, rebuilt = await live_views(bus, history.log, [h.name for h in plan.nats_hosts()])
    finally:
        await bus.close()
    since = time.monotonic()
    report = await asyncio.to_thread(check, history.log, records, live=live, rebuilt=rebuilt, parked=history.parked)
    _say(f"chaos: {len(history.log)} events checked in {time.monotonic() - since:.1f}s")
    timeline = window(points(history.log), began - 10.0)  # a fleet given by --root has an older past
    (out / "timeline.html").write_text(render_timeline(injected, timeline, f"rr chaos, seed {settings.seed}"))
    result = summary(settings.seed, settings.duration_s, schedule, injected, report, timeline, drained=drained,
                     timeline_path=str(out / "timeline.html"), views_compared=len(live))
    (out / "summary.json").write_bytes(msgspec.json.format(msgspec.json.encode(result)))
    return Outcome(summary=result, report=report, client=client.result(), timeline=timeline,
                   beside=watcher.result() if watcher else None)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
