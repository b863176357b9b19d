"""What the scheduler tests share: simulated workers, reading the log back, and the log checks every test states."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from cluster.leadership.term import Term
from config.sections.scheduler import SchedulerSettings
from config.settings import RrConfig
from eventbus.connection import Bus
from eventbus.events import (
    Event,
    HostOnline,
    LeaderElected,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCancelled,
    WorkCompleted,
    WorkStarted,
)
from eventbus.follow import follow
from eventbus.history import Record, events
from eventbus.integrity import decode_on
from eventbus.publisher import FenceToken, Publisher
from eventbus.subjects import election_filter, type_filter
from projections import work
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext
from services.leader.assigner import assignment_loop
from tests.terms import as_term

Behaviour = Callable[[WorkAssigned], str]  # "complete", "hang" or "fail"


async def run_scheduler(bus: Bus, settings: SchedulerSettings, epoch: int = 1, fence: FenceToken | None = None) -> asyncio.Task[None]:
    """The assignment loop of one leader term, in this process (fenced by the server when `fence` is given)."""
    ctx = ServiceContext("scheduler", bus, RrConfig(scheduler=settings), CommonOptions(nats_url=None, node_id="sched", config_path=None))
    term = Term("scheduler", "sched", epoch, None, ctx.publisher, lambda: True, fence=fence)
    return asyncio.create_task(assignment_loop(ctx, term))


async def elected(pub: Publisher, epoch: int, node: str = "sched") -> FenceToken:
    """Store a scheduler LEADER_ELECTED of `epoch`; the fence of its term."""
    published = await pub.publish(LeaderElected(role="scheduler", node=node, epoch=epoch))
    return FenceToken(election_filter("scheduler"), published.seq)


async def simulated_worker(bus: Bus, node: str, behaviour: Behaviour, work_s: float = 0.0) -> None:
    """Answers each WORK_ASSIGNED for `node`: started, then completed (or failed, or nothing).

    A WORK_CANCELLED of a job it holds stops that job, reported as the worker does: the attempt failed, cancelled.
    """
    pub = Publisher(bus)
    inbox: asyncio.Queue[Event] = asyncio.Queue()
    held: dict[str, WorkAssigned] = {}

    def on_record(record: Record) -> None:
        event = decode_on(record.subject, record.data, record.headers)
        if (isinstance(event, WorkAssigned) and event.node == node) or isinstance(event, WorkCancelled):
            inbox.put_nowait(event)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(follow(bus, on_record, subject=type_filter("WORK_ASSIGNED"), start_seq=1))
        tasks.create_task(follow(bus, on_record, subject=type_filter("WORK_CANCELLED"), start_seq=1))
        while True:
            event = await inbox.get()
            if isinstance(event, WorkCancelled):
                job = held.pop(event.work_id, None)
                if job is not None:
                    await pub.publish(WorkAttemptFailed(work_id=job.work_id, node=node, attempt=job.attempt, reason="cancelled"))
                continue
            assert isinstance(event, WorkAssigned)
            await _answer(pub, node, event, behaviour(event), work_s, held)


async def _answer(pub: Publisher, node: str, job: WorkAssigned, what: str, work_s: float, held: dict[str, WorkAssigned]) -> None:
    if what == "hang":
        held[job.work_id] = job
        return
    await pub.publish(WorkStarted(work_id=job.work_id, node=node, attempt=job.attempt))
    if what == "run":
        held[job.work_id] = job
        return
    await asyncio.sleep(work_s)  # the job's own run time, simulated
    if what == "fail":
        await pub.publish(WorkAttemptFailed(work_id=job.work_id, node=node, attempt=job.attempt, reason=f"exit 1 on {node}"))
    else:
        await pub.publish(WorkCompleted(work_id=job.work_id, node=node, attempt=job.attempt))


async def online(pub: Publisher, *nodes: str, epoch: int | None = None) -> None:
    """Declare nodes online (what the membership leader of `epoch` would; without one, as a term of epoch 1
    the publisher's node announces first: a HOST_ONLINE without an epoch is no leader's and never applied)."""
    if epoch is None:
        await as_term(pub, *(HostOnline(node=node) for node in nodes))
        return
    for node in nodes:
        await pub.publish(HostOnline(node=node, epoch=epoch))


async def add_items(pub: Publisher, count: int, prefix: str = "w", **extra: Any) -> list[str]:
    """Queue `count` selfplay items, pipelined; their ids."""
    ids = [f"{prefix}-{i:04d}" for i in range(count)]
    await pub.publish_many(WorkAdded(work_id=i, work_type="selfplay", board_type="hex8", num_players=2, **extra) for i in ids)
    return ids


async def read_log(bus: Bus) -> list[Event]:
    """Every event of the log, in order."""
    return [e async for _, e in events(bus) if isinstance(e, Event)]


def fold_work(log: Iterable[Event]) -> work.WorkState:
    """The work projection of a log."""
    state = work.WorkState()
    for seq, event in enumerate(log, start=1):
        if event.type_name() in work.PROJECTION.reads:
            state = work.apply(state, event, seq)
    return state


async def state_of(bus: Bus) -> work.WorkState:
    """The work projection of the log as it is now."""
    return fold_work(await read_log(bus))


async def all_in(bus: Bus, status: work.WorkStatus, ids: list[str]) -> bool:
    """Whether every one of `ids` is in `status` now."""
    state = await state_of(bus)
    return all(i in state.items and state.items[i].status is status for i in ids)


def attempt_violations(log: list[Event]) -> list[str]:
    """What the log shows going wrong with attempts: two live at once, a number reused or skipped, two completions.

    Read through the work projection (its fence and transition table), so a decision the log
    records but that never took effect (a fenced-out leader's, a superseded attempt's report) is not counted.
    """
    problems: list[str] = []
    state = work.WorkState()
    completions: Counter[str] = Counter()
    for seq, event in enumerate(log, start=1):
        if event.type_name() not in work.PROJECTION.reads:
            continue
        before = state.items.get(getattr(event, "work_id", ""))
        state = work.apply(state, event, seq)
        after = state.items.get(getattr(event, "work_id", ""))
        if before is None or after is None or _lifecycle(after) == _lifecycle(before):
            continue  # not applied (or not about an item): a refused report is noted on the item, nothing more
        if isinstance(event, WorkAssigned):
            if before.status is not work.WorkStatus.PENDING:
                problems.append(f"{event.work_id}: attempt {event.attempt} assigned while attempt {before.attempt} was {before.status.value}")
            if event.attempt != before.attempt + 1:
                problems.append(f"{event.work_id}: attempt {event.attempt} follows attempt {before.attempt}")
        if isinstance(event, WorkCompleted):
            completions[event.work_id] += 1
    problems += [f"{w}: completed {n} times" for w, n in completions.items() if n > 1]
    return problems


def _lifecycle(item: work.WorkItem) -> work.WorkItem:
    # The item less what it notes of every report, accepted or refused (the worker reads those).
    return msgspec.structs.replace(item, started=(), settled=(), completed_by=None)


async def stop(*tasks: asyncio.Task[Any]) -> None:
    """Cancel tasks and wait for them to end."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
