"""After a restart: every job a previous worker process left behind is ended and reported, none orphaned.

For each record (services/worker/records.py):
  - end events already stamped but maybe not published: publish them (same ids, so JetStream
    drops a copy it already holds within its dedupe window) unless the log shows the attempt ended;
  - a process still alive (same pid and start time): kill its group, report "orphan killed";
  - a process gone: report "job ended while worker was down";
  - never started (it waited for a slot): report "worker restarted before the job started";
unless the log already holds that attempt's end. Each of these is a hand-back (WORK_HANDED_BACK),
not a failed attempt: the worker restarting is no fault of the job, and the item runs again.
Leftover processes of the job's group are killed in every case.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable

import msgspec

from eventbus.events import Event
from projections.work import WorkItem
from services.worker import processes
from services.worker.protocol import attempt_settled
from services.worker.records import JobRecord
from services.worker.results import handed_back

log = logging.getLogger(__name__)

ORPHAN_KILLED = "worker restarted; orphan killed"
ENDED_WHILE_DOWN = "worker restarted; job ended while worker was down"
NEVER_STARTED = "worker restarted before the job started"
GROUP_POLL_S = 0.1


class Recovery(msgspec.Struct, frozen=True, kw_only=True):
    """What to do about one record: kill its process group first or not, then publish these events."""

    kill: bool
    events: list[Event]
    summary: str


def plan_recovery(record: JobRecord, alive: bool, item: WorkItem | None) -> Recovery:
    """The recovery of one record, given whether its process still runs and the item as the log makes it (pure)."""
    settled = attempt_settled(item, record.key, record.node)
    newer = sorted(a for a, _ in (item.started if item is not None else ()) if a > record.attempt)
    if record.pending and newer and not settled:  # the live path's fence would refuse them (runner.publish_until_done)
        return Recovery(kill=alive, events=[], summary=f"end not published: attempt {newer[-1]} of the item started meanwhile")
    if record.pending:
        events: list[Event] = [] if settled else list(record.pending)
        return Recovery(kill=alive, events=events, summary="end already published" if settled else "end events republished")
    if alive:
        # Its end was never published, whatever the log says of other attempts: it is ours to end.
        return Recovery(kill=True, events=[handed_back(record.key, record.node, ORPHAN_KILLED)], summary=ORPHAN_KILLED)
    if settled:
        return Recovery(kill=False, events=[], summary="end already published")
    reason = NEVER_STARTED if record.pid is None else ENDED_WHILE_DOWN
    return Recovery(kill=False, events=[handed_back(record.key, record.node, reason)], summary=reason)


def is_alive(record: JobRecord) -> bool:
    """Whether the record's process is still the one the worker started (blocking)."""
    if record.pid is None or record.create_time is None:
        return False
    return processes.is_same_process(record.pid, record.create_time)


async def kill_group(record: JobRecord, grace_s: float) -> int:
    """SIGTERM what is left of the job's process group, SIGKILL it after the grace; how many processes there were."""
    if record.pgid is None or record.create_time is None:
        return 0
    pgid, since = record.pgid, record.create_time
    members = await asyncio.to_thread(processes.group_members, pgid, since)
    found = len(members)
    if members:
        processes.signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while members and time.monotonic() < deadline:
            await asyncio.sleep(GROUP_POLL_S)
            members = await asyncio.to_thread(processes.group_members, pgid, since)
        if members:
            processes.signal_group(pgid, signal.SIGKILL)
    return found


async def recover_record(record: JobRecord, *, history: Callable[[str], Awaitable[WorkItem | None]],
                         publish: Callable[[list[Event]], Awaitable[None]], grace_s: float) -> Recovery:
    """End one left-behind job and report it; raises BusError when the log cannot be read or written."""
    alive = await asyncio.to_thread(is_alive, record)
    plan = plan_recovery(record, alive, await history(record.work_id))
    killed = await kill_group(record, grace_s)
    if killed and not plan.kill:
        log.warning("worker: %d leftover process(es) of %s attempt %d killed", killed, record.work_id, record.attempt)
    if plan.events:
        await publish(plan.events)
    log.warning("worker: recovered %s attempt %d (pid %s): %s", record.work_id, record.attempt, record.pid, plan.summary)
    return plan
