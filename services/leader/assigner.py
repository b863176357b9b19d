"""The leader-only assignment loop: folds the queue from the log, supervises attempts, assigns pending work.

The shell around queue.py (the state) and decisions.py (what a round owes). Every decision is published
fenced by the term (cluster/leadership/term.py), so no two leaders' decisions are ever both stored.
Just before publishing, the item is checked again in this fold: a decision whose item moved on
since the round was planned (a worker's report, a cancel) is dropped and reconsidered on the
next round. A move that lands between that check and the store is settled by log order: the
work fold's transition table refuses whichever event no longer fits the item.
A round's decisions go out PUBLISH_WINDOW at a time, back to back, and each window's acks are
awaited together (Term.send / Term.settle_all): under the profile of ops/bench/bench_scheduler.py
(`--profile`) a task, a `wait_for` and a timer per decision were a fifth of the leader's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

import msgspec

from cluster.leadership.term import NotLeader, Term
from config.hosts import HostsConfig
from config.hostsfile import LiveHosts
from config.sections.scheduler import SchedulerSettings
from eventbus import tracing
from eventbus.errors import BusUnavailable, InvalidEvent
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
from eventbus.history import Record
from eventbus.publisher import Published, Sent
from eventbus.tasks import raise_if_cancelled
from projections.base import Folder
from servicekit.livefold import LiveFold
from servicekit.runtime import ServiceContext
from services.leader import collector, queue
from services.leader.decisions import (
    Conditional,
    assignment_round,
    placement_round,
    supervision_round,
)
from services.leader.leaderfold import Decisions

log = logging.getLogger(__name__)

# Events after which a round should come at once rather than at the next interval.
_WAKING = frozenset(kind.type_name() for kind in (
    WorkAdded, WorkCompleted, WorkAttemptFailed, WorkHandedBack, WorkCancelled, WorkFailed, HostOnline, HostOffline))
# Events after which supervision may owe a decision at once: a node gone (hand its attempts back),
# an attempt ended (its item may have run out of attempts). A sweep costs every open item, so a
# round woken by anything else (new work, a freed slot) only assigns; time alone makes a sweep
# due every `assign_every_s`, so deadlines and silences are caught as soon as in a quiet fleet.
_SWEEPING = frozenset(kind.type_name() for kind in (HostOffline, WorkAttemptFailed, WorkHandedBack))
_ASSIGNED = WorkAssigned.type_name()
READ_BACK_TIMEOUT_S = 5.0
PUBLISH_WINDOW = 256  # decisions of one round in flight at once (each on its own item), sent back to back
# Placement looks at every pending item (~30 ms for 10,000 on these machines): not every round.
# An item that cannot run waits minutes before it fails, so marking it within seconds is enough.
PLACEMENT_EVERY_S = 3.0


class Assigner:
    """One term's assignment loop; `run()` until the term may no longer act."""

    def __init__(self, ctx: ServiceContext, term: Term, hosts: HostsConfig | None, live_hosts: LiveHosts | None = None) -> None:
        self._ctx = ctx
        self._term = term
        self._hosts = hosts
        self._live_hosts = live_hosts  # when given, re-read each round: a hosts-file edit applies within the term
        self._settings: SchedulerSettings = ctx.config.scheduler
        self._queue = Folder(queue.PROJECTION)
        every = self._settings.snapshot_every_events  # 0: none; on records alone, no time rule
        snapshots = msgspec.structs.replace(ctx.config.snapshots, every_events=every, every_s=math.inf) if every else None
        self._live = LiveFold(ctx.bus, [self._queue], on_record=self._woken_by, snapshots=snapshots, who="assigner",
                              replicas=ctx.config.streams.replicas)
        self._wake = asyncio.Event()
        self._sweep_due = True
        self._assigned_since: list[str] = []  # items read back assigned since the last round began: is each holder alive?
        self._last_sweep = float("-inf")  # time.monotonic() of the last supervision sweep
        self.published = 0
        self.conflicts = 0
        self._placed_at = -PLACEMENT_EVERY_S  # time.monotonic() of the last placement round
        self._decisions = Decisions("assigner")

    @property
    def state(self) -> queue.QueueState:
        """The queue as folded so far."""
        return self._queue.state

    @property
    def snapshot_seq(self) -> int:
        """Position of the snapshot loaded or last saved; 0: none."""
        return self._live.statistics().snapshot_seq

    def on_record(self, record: Record) -> None:
        """Fold one record of the log (history, then live)."""
        self._live.feed(record)

    def _woken_by(self, record: Record) -> None:
        # Called after the queue folded the record, twice per assigned item (its WORK_ADDED, the
        # WORK_ASSIGNED read back): decides whether a round (and a sweep) should come at once.
        # It never reads the fold's state: that would settle the maps the fold holds open between
        # reads (projections/openmap.py) on every decision read back; `_holder_lost` looks at the
        # assignments when the next round reads the state anyway.
        parts = record.subject.split(".")  # rr.evt.<aggregate>.<id>.<TYPE>.<source>
        kind = parts[4] if len(parts) == 6 else ""
        if kind in _WAKING:
            self._wake.set()
        if kind in _SWEEPING:
            self._sweep_due = True
        elif kind == _ASSIGNED:
            self._assigned_since.append(parts[3])

    def _holder_lost(self) -> bool:
        """Whether an item read back assigned since the last call is held by a node not alive (a sweep owes it a hand-back)."""
        assigned, self._assigned_since = self._assigned_since, []
        if not assigned:
            return False
        state = self.state
        return not all(self._alive_holder(state, work_id) for work_id in assigned)

    @staticmethod
    def _alive_holder(state: queue.QueueState, work_id: str) -> bool:
        """Whether the item's live attempt is on a node the cluster fold holds alive."""
        node = state.active.get(work_id)
        info = state.cluster.nodes.get(node) if node is not None else None
        return info is not None and info.alive

    async def wait_seen(self, seq: int, timeout: float) -> bool:
        """Wait until the fold has read the log up to `seq`; True when it has."""
        return await self._live.wait_position(seq, timeout)

    async def run(self) -> None:
        """Rebuild from the newest snapshot and the log, then supervise and assign every `assign_every_s` (sooner on news)."""
        await self._live.start()
        # The rebuilt state out of the collector's walks while this term assigns (see collector.py).
        with collector.settled_while_assigning():
            await self._assign_until_stopped()

    async def _assign_until_stopped(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            follower = tasks.create_task(self._live.follow())
            try:
                log.info("assigner: epoch %s starts with %d items", self._term.epoch, len(self.state.work.items))
                while True:
                    self._wake.clear()
                    await self.tick(sweep=self._holder_lost() or self._sweep_due
                                    or time.monotonic() - self._last_sweep >= self._settings.assign_every_s)
                    raise_if_cancelled()  # a stop that the round's publishes lost (Python 3.11's wait_for)
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
                    # that arrives as the wake-up is set, and the loop would never stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._settings.assign_every_s):
                            await self._wake.wait()
            except NotLeader as exc:
                log.info("assigner: %s", exc)
            finally:
                follower.cancel()

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
        """Publish one round's decisions (distinct items), PUBLISH_WINDOW at a time; the newest sequence appended.

        A window is sent back to back and its acks awaited together (one deadline, no task per
        decision): each decision still carries the term's fence, and is checked against this fold
        just before it is sent.
        """
        last = 0
        for start in range(0, len(decisions), PUBLISH_WINDOW):
            sent: list[Sent] = []
            for decision in decisions[start:start + PUBLISH_WINDOW]:
                one = await self._send(decision)
                if one is not None:
                    sent.append(one)
            for one, outcome in zip(sent, await self._term.settle_all(sent)):
                last = max(last, self._settled(one.event, outcome))
        return last

    async def _send(self, decision: Conditional) -> Sent | None:
        """Send a decision if its item is still as it was seen; None when the item moved on meanwhile or it was refused."""
        work_id, event, expected = decision
        state = self.state  # once: each read of the property settles the fold's position
        if queue.expected_seq(state, work_id) != expected:
            self.conflicts += 1
            log.debug("assigner: %s moved on since seq %d; reconsidered next round", work_id, expected)
            return None
        item = state.work.items.get(work_id)
        try:
            # The item's trace goes on through the leader: the decision is a span of it, and the event carries it.
            with tracing.continued(item.trace if item is not None else None, f"decide {event.type_name()}"):
                return await self._term.send(event)
        except InvalidEvent as exc:  # built from a bad value folded from the log: refused, the round goes on
            log.error("assigner: decision for %s not published: %s", work_id, exc)
            return None

    def _settled(self, event: Event, outcome: Published | Exception) -> int:
        """The sequence a sent decision landed at; 0 when the bus was away or it was refused (logged)."""
        work_id = event.aggregate_id()
        if isinstance(outcome, BusUnavailable):
            log.warning("assigner: could not publish %s for %s: %s", event.type_name(), work_id, outcome)
            return 0
        if isinstance(outcome, Exception):  # e.g. refused by the server for a value folded from the log
            log.error("assigner: decision for %s not published: %s", work_id, outcome)
            return 0
        self.published += 1
        return outcome.seq


async def assignment_loop(ctx: ServiceContext, term: Term) -> None:
    """The leader's scheduling loop (see the module docstring)."""
    live_hosts = LiveHosts(ctx.config.hosts_file, "assigner")
    await Assigner(ctx, term, await live_hosts.read(), live_hosts).run()
