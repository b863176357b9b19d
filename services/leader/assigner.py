"""The leader-only assignment loop: folds the queue from the log, supervises attempts, assigns pending work.

The shell around queue.py (the state) and decisions.py (what a round owes). Every decision is published
fenced by the term (cluster/leadership/term.py), so no two leaders' decisions are ever both stored.
Just before publishing, the item is checked again in this fold: a decision whose item moved on
since the round was planned (a worker's report, a cancel) is dropped and reconsidered on the
next round. A move that lands between that check and the store is settled by log order: the
work fold's transition table refuses whichever event no longer fits the item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from cluster.leadership.term import NotLeader, Term
from config.hosts import HostsConfig
from config.hostsfile import LiveHosts
from eventbus import tracing
from eventbus.errors import BusError, BusUnavailable, InvalidEvent
from eventbus.events import (
    Event,
    HostOffline,
    HostOnline,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
    WorkHandedBack,
    utcnow,
)
from eventbus.follow import follow
from eventbus.history import Record, last_sequence
from eventbus.integrity import decode_on
from servicekit.runtime import ServiceContext
from servicekit.snapshotting import load_state, save_state
from services.leader import queue
from services.leader.decisions import (
    Conditional,
    assignment_round,
    placement_round,
    supervision_round,
)
from services.leader.leaderfold import Decisions
from services.leader.settings import SchedulerSettings

log = logging.getLogger(__name__)

# Events after which a round should come at once rather than at the next interval.
_WAKING = (WorkAdded, WorkCompleted, WorkAttemptFailed, WorkHandedBack, WorkCancelled, WorkFailed, HostOnline, HostOffline)
# Events after which supervision may owe a decision at once: a node gone (hand its attempts back),
# an attempt ended (its item may have run out of attempts). A sweep costs every open item, so a
# round woken by anything else (new work, a freed slot) only assigns; time alone makes a sweep
# due every `assign_every_s`, so deadlines and silences are caught as soon as in a quiet fleet.
_SWEEPING = (HostOffline, WorkAttemptFailed, WorkHandedBack)
CATCH_UP_TIMEOUT_S = 60.0
READ_BACK_TIMEOUT_S = 5.0
PUBLISH_WINDOW = 256  # decisions of one round in flight at once (each on its own item)
RETRY_S = 1.0
CALL_TIMEOUT_S = 10.0
# Placement looks at every pending item (~30 ms for 10,000 on these machines): not every round.
# An item that cannot run waits minutes before it fails, so marking it within seconds is enough.
PLACEMENT_EVERY_S = 3.0

T = TypeVar("T")


class Assigner:
    """One term's assignment loop; `run()` until the term may no longer act."""

    def __init__(self, ctx: ServiceContext, term: Term, hosts: HostsConfig | None, live_hosts: LiveHosts | None = None) -> None:
        self._ctx = ctx
        self._term = term
        self._hosts = hosts
        self._live_hosts = live_hosts  # when given, re-read each round: a hosts-file edit applies within the term
        self._settings: SchedulerSettings = ctx.config.scheduler
        self.state = queue.QueueState()
        self._seen_seq = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._sweep_due = True
        self._last_sweep = float("-inf")  # time.monotonic() of the last supervision sweep
        self.published = 0
        self.conflicts = 0
        self._since_snapshot = 0
        self._snapshot_due = asyncio.Event()
        self.snapshot_seq = 0  # position of the snapshot loaded or last saved; 0: none
        self._placed_at = -PLACEMENT_EVERY_S  # time.monotonic() of the last placement round
        self._decisions = Decisions("assigner")

    def on_record(self, record: Record) -> None:
        """Fold one record of the log (history, then live)."""
        if record.seq <= self._seen_seq:
            return  # a resumed follower's overlap
        self._seen_seq = record.seq
        try:
            event = decode_on(record.subject, record.data, record.headers)
        except InvalidEvent as exc:
            log.warning("assigner: skipping undecodable record %d: %s", record.seq, exc)
            event = None
        if isinstance(event, Event):
            self.state = queue.apply(self.state, event, record.seq)
            if isinstance(event, _WAKING):
                self._wake.set()
            if isinstance(event, _SWEEPING) or (isinstance(event, WorkAssigned) and not self._alive(event.node)):
                self._sweep_due = True
        self._since_snapshot += 1
        if self._settings.snapshot_every_events and self._since_snapshot >= self._settings.snapshot_every_events:
            self._snapshot_due.set()
        if self._waiters:
            self._release_waiters()

    def _alive(self, node: str) -> bool:
        info = self.state.cluster.nodes.get(node)
        return info is not None and info.alive

    def _release_waiters(self) -> None:
        still = []
        for seq, future in self._waiters:
            if self._seen_seq >= seq:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((seq, future))
        self._waiters = still

    async def wait_seen(self, seq: int, timeout: float) -> bool:
        """Wait until the fold has read the log up to `seq`; True when it has."""
        if self._seen_seq >= seq:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(future, timeout)
        return self._seen_seq >= seq

    async def run(self) -> None:
        """Rebuild from the log, then supervise and assign every `assign_every_s` (sooner on news)."""
        await self._start_from_snapshot()
        target = await self._retrying(lambda: last_sequence(self._ctx.bus))
        async with asyncio.TaskGroup() as tasks:
            follower = tasks.create_task(self._follow_forever())
            saver = tasks.create_task(self._save_snapshots())
            try:
                if not await self.wait_seen(target, CATCH_UP_TIMEOUT_S):
                    log.warning("assigner: log not read up to %d in %ss; deciding on what was read", target, CATCH_UP_TIMEOUT_S)
                log.info("assigner: epoch %s starts with %d items", self._term.epoch, len(self.state.work.items))
                while True:
                    self._wake.clear()
                    await self.tick(sweep=self._sweep_due or time.monotonic() - self._last_sweep >= self._settings.assign_every_s)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._settings.assign_every_s)
            except NotLeader as exc:
                log.info("assigner: %s", exc)
            finally:
                follower.cancel()
                saver.cancel()

    async def _start_from_snapshot(self) -> None:
        # No snapshot, or one that cannot be read: fold from sequence 1, as correct, only slower.
        try:
            loaded = await asyncio.wait_for(load_state(self._ctx.bus, queue.PROJECTION, "assigner"), CALL_TIMEOUT_S)
        except (TimeoutError, BusError) as exc:
            log.warning("assigner: no snapshot (%s); folding the log from seq 1", exc)
            return
        if loaded is not None:
            self.state, self._seen_seq = loaded.state, loaded.header.last_seq
            self.snapshot_seq = loaded.header.last_seq

    async def _save_snapshots(self) -> None:
        # One save at a time; events folded meanwhile only make the next one due.
        while True:
            await self._snapshot_due.wait()
            self._snapshot_due.clear()
            self._since_snapshot = 0
            state = self.state
            try:
                size = await save_state(self._ctx.bus, queue.PROJECTION, state, replicas=self._ctx.config.streams.replicas)
            except BusError as exc:
                log.warning("assigner: snapshot at seq %d not saved: %s", state.last_seq, exc)
                continue
            self.snapshot_seq = state.last_seq
            log.info("assigner: snapshot saved at seq %d (%d bytes)", state.last_seq, size)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        # JetStream away for a moment must not end the leadership term.
        while True:
            try:
                return await asyncio.wait_for(call(), CALL_TIMEOUT_S)
            except (TimeoutError, BusUnavailable) as exc:
                log.warning("assigner: the log is not readable yet, retrying: %s", exc)
            await asyncio.sleep(RETRY_S)

    async def _follow_forever(self) -> None:
        while True:
            try:
                await follow(self._ctx.bus, self.on_record, start_seq=self._seen_seq + 1)
            except BusUnavailable as exc:  # resume after what was folded: nothing skipped, nothing twice
                log.warning("assigner: following the log failed, resuming: %s", exc)
            await asyncio.sleep(RETRY_S)

    async def tick(self, sweep: bool = True) -> None:
        """One round: fail attempts in trouble and give up on exhausted items (when `sweep`), assign what fits, mark what cannot run."""
        if self._live_hosts is not None:
            self._hosts = await self._live_hosts.read()
        now = utcnow()
        if sweep:
            self._sweep_due, self._last_sweep = False, time.monotonic()
            last = await self._publish_all(self._decisions(supervision_round, self.state, now, self._settings))
            if last:  # let the fold see what was just decided before planning on it
                await self.wait_seen(last, READ_BACK_TIMEOUT_S)
        last = await self._publish_all(self._decisions(assignment_round, self.state, now, self._hosts, self._settings))
        if last:
            await self.wait_seen(last, READ_BACK_TIMEOUT_S)
        if time.monotonic() - self._placed_at >= PLACEMENT_EVERY_S:
            self._placed_at = time.monotonic()
            last = await self._publish_all(self._decisions(placement_round, self.state, self._hosts, self._settings))
            if last:
                await self.wait_seen(last, READ_BACK_TIMEOUT_S)

    async def _publish_all(self, decisions: list[Conditional]) -> int:
        """Publish one round's decisions (distinct items), PUBLISH_WINDOW at a time; the newest sequence appended."""
        last = 0
        for start in range(0, len(decisions), PUBLISH_WINDOW):
            batch = decisions[start:start + PUBLISH_WINDOW]
            seqs = await asyncio.gather(*(self._publish(decision) for decision in batch))
            last = max(last, *seqs)
        return last

    async def _publish(self, decision: Conditional) -> int:
        """Append a decision if its item is still as it was seen; 0 when the item moved on meanwhile or the bus is away."""
        work_id, event, expected = decision
        if queue.expected_seq(self.state, work_id) != expected:
            self.conflicts += 1
            log.debug("assigner: %s moved on since seq %d; reconsidered next round", work_id, expected)
            return 0
        item = self.state.work.items.get(work_id)
        try:
            # The item's trace goes on through the leader: the decision is a span of it, and the event carries it.
            with tracing.continued(item.trace if item is not None else None, f"decide {event.type_name()}"):
                published = await self._term.publish(event)
        except BusUnavailable as exc:
            log.warning("assigner: could not publish %s for %s: %s", event.type_name(), work_id, exc)
            return 0
        except InvalidEvent as exc:  # built from a bad value folded from the log: refused, the round goes on
            log.error("assigner: decision for %s not published: %s", work_id, exc)
            return 0
        self.published += 1
        return published.seq


async def assignment_loop(ctx: ServiceContext, term: Term) -> None:
    """The leader's scheduling loop (see the module docstring)."""
    live_hosts = LiveHosts(ctx.config.hosts_file, "assigner")
    await Assigner(ctx, term, await live_hosts.read(), live_hosts).run()
