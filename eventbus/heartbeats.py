"""Heartbeats on the wire: one beat per node every few seconds on rr.tel.hb.<node>, kept in RR_TELEMETRY.

Beats are telemetry, not facts: they go to the bounded RR_TELEMETRY stream (the last 120 per
node, one hour), never to the forensic log. Only the leader's decisions about them (a node
came online, went offline) are events. Beats are core publishes, which the stream captures
without an ack round trip: a lost beat is covered by the next one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Callable

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DeliverPolicy

from eventbus.connection import Bus
from eventbus.errors import BusUnavailable
from eventbus.events import HostResources
from eventbus.history import _seq_and_pending, last_sequence
from eventbus.streams import TELEMETRY_STREAM
from eventbus.subjects import TELEMETRY_ROOT, heartbeat_subject

ALL_HEARTBEATS = f"{TELEMETRY_ROOT}.hb.*"

_SILENT = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)


class RunningJob(msgspec.Struct, frozen=True, kw_only=True):
    """One job a node's worker runs now, as the agent reports it."""

    work_id: str
    attempt: int = 1
    work_type: str = ""
    pid: int | None = None
    started: dt.datetime | None = None


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """One beat of a node's agent: it is alive, with what, running what, and how healthy its loop is."""

    node: str
    ts: dt.datetime  # the agent's UTC clock when it built the beat
    seq: int  # counts up from 1 in each agent process
    interval_s: float  # the agent's pace: the next beat is due this long after this one
    resources: HostResources = HostResources()
    roles: list[str] = []
    jobs: list[RunningJob] = []
    version: str = ""
    loop_lag_s: float = 0.0  # the agent's event-loop lag, last sample
    loop_lag_max_s: float = 0.0  # ... and worst since it started
    started: dt.datetime | None = None  # when this agent process started; a new value means a restart
    leaving: bool = False  # the last beat of a clean shutdown: offline now, not after the silence


class StoredBeat(msgspec.Struct, frozen=True, kw_only=True):
    """A beat as RR_TELEMETRY holds it: with the server's time of storing it and its sequence."""

    beat: Heartbeat
    stored_at: dt.datetime
    seq: int


class WatchStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Beats a live watch received, and how many of them could not be decoded."""

    received: int
    invalid: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Heartbeat)


def encode_heartbeat(beat: Heartbeat) -> bytes:
    """One line of JSON for the wire."""
    return _encoder.encode(beat)


def decode_heartbeat(data: bytes) -> Heartbeat:
    """A beat from the wire; msgspec.DecodeError (a ValidationError names the field) when it is not one."""
    return _decoder.decode(data)


async def publish_heartbeat(bus: Bus, beat: Heartbeat, *, flush_timeout: float | None = None) -> None:
    """Send one beat; with `flush_timeout`, wait until the server has it (for the leaving beat)."""
    try:
        await bus.nc.publish(heartbeat_subject(beat.node), encode_heartbeat(beat))
        if flush_timeout is not None:
            await bus.nc.flush(timeout=math.ceil(flush_timeout))  # nats-py takes whole seconds
    except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError, nats.errors.TimeoutError) as exc:
        raise BusUnavailable(f"heartbeat of {beat.node} not sent: {exc or type(exc).__name__}") from None


class HeartbeatWatch:
    """A live subscription to every node's beats; `stop()` ends it."""

    def __init__(self, bus: Bus, on_beat: Callable[[Heartbeat], None]) -> None:
        self._bus = bus
        self._on_beat = on_beat
        self._sub: Subscription | None = None
        self._received = 0
        self._invalid = 0

    def statistics(self) -> WatchStatistics:
        """Counters so far."""
        return WatchStatistics(received=self._received, invalid=self._invalid)

    async def start(self) -> None:
        """Subscribe, and make sure the server knows before returning (so no later beat is missed)."""
        self._sub = await self._bus.nc.subscribe(ALL_HEARTBEATS, cb=self._on_msg)
        try:
            await self._bus.nc.flush(timeout=5)
        except nats.errors.TimeoutError:
            raise BusUnavailable("the server did not confirm the heartbeat subscription within 5s") from None

    async def _on_msg(self, msg: Msg) -> None:
        self._received += 1
        try:
            beat = _decoder.decode(msg.data)
        except msgspec.DecodeError:
            self._invalid += 1  # a beat is telemetry: a bad one is counted and skipped, never parked
            return
        self._on_beat(beat)

    async def stop(self) -> None:
        """Unsubscribe (idempotent)."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            if not self._bus.nc.is_closed:
                await sub.unsubscribe()


async def watch_heartbeats(bus: Bus, on_beat: Callable[[Heartbeat], None]) -> HeartbeatWatch:
    """Call `on_beat` (on the loop; it must be quick) for every beat published from now on."""
    watch = HeartbeatWatch(bus, on_beat)
    await watch.start()
    return watch


async def latest_heartbeats(bus: Bus, *, idle_timeout: float = 10.0) -> list[StoredBeat]:
    """The newest stored beat of every node in RR_TELEMETRY (undecodable ones skipped), by node."""
    end = await last_sequence(bus, TELEMETRY_STREAM)
    if end == 0:
        return []
    latest: dict[str, StoredBeat] = {}
    done = asyncio.get_running_loop().create_future()
    count = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        count += 1
        seq, pending = _seq_and_pending(msg.reply)
        try:
            beat = _decoder.decode(msg.data)
        except msgspec.DecodeError:
            beat = None
        if beat is not None:
            latest[beat.node] = StoredBeat(beat=beat, stored_at=msg.metadata.timestamp, seq=seq)
        if (seq >= end or pending == 0) and not done.done():
            done.set_result(None)

    try:
        sub = await bus.js.subscribe(
            ALL_HEARTBEATS, stream=TELEMETRY_STREAM, ordered_consumer=True, cb=on_msg,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        )
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer reading the latest heartbeats: {exc}") from None
    try:
        info = await sub.consumer_info()
        if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq) and count == 0:
            return []  # nothing matched: no message will ever arrive to end the wait
        await _wait_moving(done, lambda: count, idle_timeout)
    finally:
        await sub.unsubscribe()
    return sorted(latest.values(), key=lambda s: s.beat.node)


async def _wait_moving(done: asyncio.Future[None], progress: Callable[[], int], idle_timeout: float) -> None:
    # A timeout only when nothing arrives for idle_timeout, not on a long read that moves.
    last = -1
    while not done.done():
        if progress() == last:
            raise BusUnavailable(f"reading the latest heartbeats stalled: nothing for {idle_timeout}s")
        last = progress()
        await asyncio.wait([done], timeout=idle_timeout)
