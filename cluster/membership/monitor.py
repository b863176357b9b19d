"""The leader-only membership loop: heartbeats in, HOST_ONLINE / HOST_OFFLINE decisions (with the term's epoch) out.

The shell around core.py: it rebuilds the alive set from the log, follows beats live (and
reads the newest stored beat of each node, for nodes that beat before it started), sweeps
for silent nodes every interval x sweep_fraction, and publishes transitions in order from
one task, so a slow publish never holds up beats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any, Protocol

import msgspec

from cluster.leadership.term import NotLeader
from cluster.membership.core import MembershipState, from_events, observe, sweep
from cluster.membership.log import membership_events
from config.sections.membership import MembershipSettings
from eventbus.errors import BusUnavailable
from eventbus.events import Event, utcnow
from eventbus.heartbeats import Heartbeat, HeartbeatWatch, StoredBeat, latest_heartbeats, watch_heartbeats
from eventbus.tasks import raise_if_cancelled
from servicekit.runtime import ServiceContext

log = logging.getLogger(__name__)

RETRY_PUBLISH_S = 1.0


class LeaderTerm(Protocol):
    """What the loop needs of a term: its epoch (a leadership Term also fences publishing)."""

    @property
    def epoch(self) -> int:
        """The term's fencing epoch, set on every decision."""


class MonitorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What one leader's membership loop has done so far."""

    epoch: int
    nodes: int
    alive: int
    beats: int
    invalid_beats: int
    stored_beats: int
    sweeps: int
    sweeps_skipped: int  # sweeps not judged because this process itself had stalled
    published: int
    queued: int


class MembershipMonitor:
    """One term's membership loop; `run()` until cancelled (or the term ends)."""

    def __init__(self, ctx: ServiceContext, term: LeaderTerm) -> None:
        self._ctx = ctx
        self._term = term
        self._settings: MembershipSettings = ctx.config.membership
        self._state = MembershipState()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._counts = {"beats": 0, "stored_beats": 0, "sweeps": 0, "sweeps_skipped": 0, "published": 0}
        self._watch: HeartbeatWatch | None = None
        self._judging = asyncio.Event()
        self._listening_since = -math.inf  # monotonic time this term began to follow beats

    @property
    def state(self) -> MembershipState:
        """The alive set as this leader sees it now."""
        return self._state

    async def wait_judging(self, timeout: float) -> bool:
        """Wait until the loop has rebuilt its state and follows beats; True when it does."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._judging.wait(), timeout)
        return self._judging.is_set()

    def statistics(self) -> MonitorStatistics:
        """Counters so far."""
        return MonitorStatistics(
            epoch=self._term.epoch, nodes=len(self._state.nodes), alive=len(self._state.alive()),
            invalid_beats=self._watch.statistics().invalid if self._watch else 0, queued=self._queue.qsize(), **self._counts,
        )

    async def run(self) -> None:
        """Rebuild from the log, then judge beats and silences until cancelled; returns when the term may no longer act."""
        history = await membership_events(self._ctx.bus)
        self._state = from_events((e for _, e in history), time.monotonic())
        log.info("membership: epoch %s starts with %d nodes (%d alive)", self._term.epoch, len(self._state.nodes), len(self._state.alive()))
        self._listening_since = time.monotonic()
        self._watch = watch = await watch_heartbeats(self._ctx.bus, self._on_beat)  # live first: no beat falls between
        try:
            for stored in await latest_heartbeats(self._ctx.bus):
                self._on_stored(stored)
            self._judging.set()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._sweep_forever())
                tasks.create_task(self._publish_forever())
        except* NotLeader as group:
            log.info("membership: %s", group.exceptions[0])
        finally:
            await watch.stop()

    def _on_beat(self, beat: Heartbeat) -> None:
        self._counts["beats"] += 1
        self._decide(*observe(self._state, beat, time.monotonic()))

    def _on_stored(self, stored: StoredBeat) -> None:
        # A stored beat's age is judged by the wall clocks of the server and this leader.
        self._counts["stored_beats"] += 1
        age = max(0.0, (utcnow() - stored.stored_at).total_seconds())
        self._decide(*observe(self._state, stored.beat, time.monotonic(), age_s=age, silence_s=self._settings.silence_s,
                            stored=True))

    def _decide(self, state: MembershipState, events: list[Event]) -> None:
        self._state = state
        for event in events:
            self._queue.put_nowait(event)

    async def _sweep_forever(self) -> None:
        every = self._settings.sweep_every_s
        previous = time.monotonic()
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            if now - previous > 2 * every + 0.5:
                # This process itself stalled: beats that arrived meanwhile are still queued
                # behind this timer, and every node would look silent. Judge next time.
                self._counts["sweeps_skipped"] += 1
                previous = now
                continue
            previous = now
            self._counts["sweeps"] += 1
            self._decide(*sweep(self._state, now, self._settings.silence_s, self._listening_since))

    async def _publish_forever(self) -> None:
        while True:
            event = self._ctx.publisher.stamp(await self._queue.get())  # stamped once: a retry keeps its id
            await self._publish(event)
            self._counts["published"] += 1
            raise_if_cancelled()  # a stop that the publish lost (Python 3.11's wait_for): the queue may stay empty

    async def _publish(self, event: Event) -> None:
        while True:
            try:
                await self._send(event)
                return
            except BusUnavailable as exc:
                log.warning("membership: %s not published yet, retrying: %s", event.type_name(), exc)
            await asyncio.sleep(RETRY_PUBLISH_S)

    async def _send(self, event: Event) -> None:
        publish: Any = getattr(self._term, "publish", None)
        if callable(publish):
            await publish(event)  # a leadership Term: stamps the epoch, refuses once the term is over
        else:
            await self._ctx.publisher.publish(msgspec.structs.replace(event, epoch=self._term.epoch))


async def membership_loop(ctx: ServiceContext, term: LeaderTerm) -> None:
    """Leader-only loop: keep HOST_ONLINE / HOST_OFFLINE in the log true to the heartbeats, until cancelled."""
    await MembershipMonitor(ctx, term).run()
