"""Test harness for the worker: a live view of the event log, a worker run in-process, and a scheduler stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

from config.sections.worker import WorkerSettings
from config.settings import RrConfig
from eventbus.connection import Bus, connect
from eventbus.events import Event, LeaderElected, WorkAdded, WorkAssigned, WorkCancelled, utcnow
from eventbus.follow import follow
from eventbus.history import Record
from eventbus.integrity import decode_on
from eventbus.publisher import Publisher
from eventbus.streams import EVENTS_STREAM
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext
from services.worker import service as worker_service

E = TypeVar("E", bound=Event)

CHILD = "{python} -m tests.procs.worker_child --pids {output_dir}/pids"
EPOCH = 7


class EventLog:
    """Every event of RR_EVENTS as it arrives, with its sequence."""

    def __init__(self) -> None:
        self.records: list[tuple[int, Event]] = []

    def on_record(self, record: Record) -> None:
        """Keep one record, decoded."""
        self.records.append((record.seq, decode_on(record.subject, record.data, record.headers)))

    def of(self, kind: type[E], **match: Any) -> list[E]:
        """The events of one type whose fields equal `match`, in log order."""
        return [e for _, e in self.records if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items())]

    def seq_of(self, event: Event) -> int:
        """The stream sequence of an event seen."""
        return next(seq for seq, e in self.records if e.id == event.id)


@contextlib.asynccontextmanager
async def watching(bus: Bus) -> AsyncIterator[EventLog]:
    """An EventLog following the stream from its start for the duration of the block."""
    log = EventLog()
    task = asyncio.ensure_future(follow(bus, log.on_record, start_seq=1))
    try:
        yield log
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def worker_settings(tmp_path: Path, **overrides: Any) -> WorkerSettings:
    """Settings for a test worker: data under tmp_path, short grace, watch interval and pull requests."""
    # Short pulls: the worker's stop waits out its open pull request (2 s by default) at every test's end.
    values: dict[str, Any] = {"data_dir": str(tmp_path / "data"), "grace_s": 2.0, "watch_interval_s": 0.1,
                              "shutdown_grace_s": 1.0, "progress_interval_s": 10.0, "gpu_idle_check": False,
                              "pull_expires_s": 0.25}
    values.update(overrides)
    return WorkerSettings(**values)


async def wait_consumer(bus: Bus, node: str, timeout: float = 10.0) -> None:
    """Until the worker's durable consumer exists (without the node's HOST_ONLINE it delivers only what is published after)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await bus.js.consumer_info(EVENTS_STREAM, f"worker-{node}")
            return
        except Exception:  # noqa: BLE001 - not created yet
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def worker_running(url: str, node: str, config: RrConfig) -> AsyncIterator[ServiceContext]:
    """The worker service of `node` running in this process on its own connection; stopped on exit."""
    bus = await connect(url, node_id=node)
    ctx = ServiceContext("worker", bus, config, CommonOptions(nats_url=url, node_id=node, config_path=None))
    task = asyncio.ensure_future(worker_service.main(ctx))
    try:
        waiting = asyncio.ensure_future(wait_consumer(bus, node))
        await asyncio.wait([waiting, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiting.cancel()
            task.result()  # raises the worker's error
        await waiting
        yield ctx
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=15)
        await bus.close()


class Scheduler:
    """Stands in for the scheduler's leader: adds work, assigns it with an epoch, cancels it."""

    def __init__(self, bus: Bus, epoch: int = EPOCH) -> None:
        self.publisher = Publisher(bus)
        self.epoch = epoch

    async def elected(self, epoch: int) -> None:
        """A scheduler leader was elected with this epoch."""
        self.epoch = epoch
        await self.publisher.publish(LeaderElected(role="scheduler", node="sched", ttl_s=3.0, epoch=epoch))

    async def add(self, work_id: str, work_type: str = "selfplay", *, num_games: int = 2, **params: Any) -> WorkAdded:
        """WORK_ADDED of a hex8 2-player item."""
        event = WorkAdded(work_id=work_id, work_type=work_type, board_type="hex8", num_players=2, num_games=num_games,
                          params=params)
        return await self._publish(event)

    async def assign(self, work_id: str, node: str, attempt: int = 1, *, epoch: int | None = None,
                     deadline: dt.datetime | None = None) -> WorkAssigned:
        """WORK_ASSIGNED of one attempt, under the leader's epoch unless another is given."""
        event = WorkAssigned(work_id=work_id, node=node, attempt=attempt, deadline=deadline or utcnow() + dt.timedelta(hours=1),
                             epoch=self.epoch if epoch is None else epoch)
        return await self._publish(event)

    async def cancel(self, work_id: str, reason: str = "") -> WorkCancelled:
        """WORK_CANCELLED of an item."""
        return await self._publish(WorkCancelled(work_id=work_id, reason=reason, epoch=self.epoch))

    async def _publish(self, event: E) -> E:
        published = await self.publisher.publish(event)
        return published.event  # type: ignore[return-value]


def pids_in(path: Path) -> list[int]:
    """The pids a tests.procs.worker_child wrote."""
    return [int(line) for line in path.read_text().split()]

