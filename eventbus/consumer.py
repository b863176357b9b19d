"""Durable consumer runtime: explicit acks, bounded redelivery, poison messages parked, clean drain.

Messages are pulled with raw `CONSUMER.MSG.NEXT` requests into one callback subscription
(nats-py's `fetch()` costs a task and a `wait_for` per message, ~5x slower here). nats-py
runs a subscription's callback for one message at a time, so handlers see events in
delivery order and never overlap.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Union

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig

from eventbus import tracing
from eventbus.backoff import jittered_backoff
from eventbus.connection import Bus
from eventbus.deadletter import park
from eventbus.durablestart import FirstStart, deliver_options, start_options
from eventbus.errors import BusUnavailable, InvalidEvent, StreamSetupError
from eventbus.events import Event
from eventbus.integrity import SubjectMismatch, decode_on
from eventbus.streams import EVENTS_STREAM
from eventbus.subjects import ALL_EVENTS

log = logging.getLogger(__name__)


class Delivery(msgspec.Struct, frozen=True):
    """Where a delivered event sits in the stream and how often it has been delivered."""

    stream_seq: int
    num_delivered: int
    subject: str


AsyncHandler = Callable[[Any, Delivery], Awaitable[None]]
SyncHandler = Callable[[Any, Delivery], None]
Handler = Union[AsyncHandler, SyncHandler]


FIRST_BATCH = 100  # the first pull of a consumer whose handling speed is not known yet
PULL_RETRY_BASE_S = 0.1  # after a pull the server ended with an error, the next waits this long, doubling per error in a row
PULL_RETRY_CAP_S = 5.0


class ConsumerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A durable consumer as a service declares it."""

    durable: str
    stream: str = EVENTS_STREAM
    filter_subjects: tuple[str, ...] = (ALL_EVENTS,)
    deliver: Literal["all", "new"] = "all"
    max_attempts: int = 5  # deliveries a message gets before it is parked
    backoff_s: tuple[float, ...] = (0.2, 1.0, 5.0)  # nak delay after the 1st, 2nd, 3rd+ failure
    ack_wait_s: float = 30.0
    max_ack_pending: int = 8000
    # The largest pull request; two are kept in flight, within max_ack_pending. The size actually
    # asked for follows how long handling takes (see EventConsumer._next_batch).
    batch: int = 4000
    pull_expires_s: float = 5.0


class ConsumerStats(msgspec.Struct, frozen=True):
    """Counters of one consumer since it started."""

    received: int
    handled: int
    ignored: int
    failed: int
    parked: int
    redelivered: int
    duplicates: int = 0  # redeliveries of events this instance had already settled, acked unhandled


def pull_size(spec: ConsumerSpec, seconds_per_message: float) -> int:
    """How many messages to ask for: as many as are handled within an eighth of the ack wait, up to `spec.batch`.

    Deep requests keep the server streaming to fast handlers (the ack window was what limited the
    consume benchmark); shallow ones keep a slow handler's queue short, so nothing waits in the
    client past its ack deadline and is redelivered meanwhile. Before the first timing (0), a
    small request.
    """
    if seconds_per_message <= 0:
        return min(spec.batch, FIRST_BATCH)
    fits = int(spec.ack_wait_s / 8 / seconds_per_message)
    return max(1, min(spec.batch, fits))


def _reply_position(reply: str) -> tuple[int, int]:
    """(stream sequence, delivery count) from a JetStream ack subject (v1 and v2 layouts)."""
    tokens = reply.split(".")
    offset = 0 if len(tokens) == 9 else 2
    return int(tokens[5 + offset]), int(tokens[4 + offset])


class EventConsumer:
    """Runs handlers over a durable consumer until stopped; see ConsumerSpec for the knobs."""

    def __init__(self, bus: Bus, spec: ConsumerSpec, handlers: Mapping[type[Event], Handler],
                 first_start: FirstStart | None = None) -> None:
        self._bus = bus
        self.spec = spec
        self._first_start = first_start  # where the durable starts if ensure() creates it; None: spec.deliver
        self._handlers = {t: _as_async(h) for t, h in handlers.items()}
        self._counts = dict.fromkeys(ConsumerStats.__struct_fields__, 0)
        self._pending = 0  # messages requested and not yet received
        # Two requests in flight: the next batch is asked for while a whole one is still to
        # come, so the server never waits on our request (half a batch ahead cost ~15%).
        self._refill_at = min(spec.batch, FIRST_BATCH)
        self._seconds_per_message = 0.0  # moving average of handling one message, ack included; 0: none yet
        self._want_more = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._last_heard = time.monotonic()
        self._last_request = 0.0  # monotonic time of our newest pull request
        self._failed_pulls = 0  # pulls in a row the server ended with an error status (503 during an election, ...)
        self._retry_at = 0.0  # monotonic time before which no new pull is sent after such an error
        self._inbox = ""
        self._sub: Subscription | None = None
        self._keepalive = _KeepAlive.idle()
        # Messages queued in the client longer than the ack wait (behind a slow handler) are
        # redelivered while their first copy waits; the recently settled sequences let the
        # second copy be acked without running the handler again.
        self._settled: set[int] = set()
        self._settled_order: deque[int] = deque()

    def statistics(self) -> ConsumerStats:
        """Counters so far, also fed to metrics."""
        return ConsumerStats(**self._counts)

    async def ensure(self) -> None:
        """Create the durable consumer, or update it to this spec (its start stays as created); idempotent."""
        spec = self.spec
        start = (deliver_options(spec.deliver) if self._first_start is None
                 else await start_options(self._bus, spec.stream, spec.durable, self._first_start))
        config = ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            **start,
            # Backstop only: the runtime parks a message after max_attempts deliveries itself.
            max_deliver=spec.max_attempts + 3,
            ack_wait=spec.ack_wait_s,
            max_ack_pending=spec.max_ack_pending,
            filter_subjects=list(spec.filter_subjects),
        )
        try:
            await self._bus.js.add_consumer(spec.stream, config)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise BusUnavailable(f"JetStream did not answer creating consumer {spec.durable}: {exc}") from None
        except nats.js.errors.APIError as exc:
            raise StreamSetupError(f"consumer {spec.stream}/{spec.durable}: {exc.description}") from None

    async def run(self) -> None:
        """Consume until `stop()`; then drain what is in flight and return."""
        await self.ensure()
        self._inbox = self._bus.nc.new_inbox()
        self._sub = await self._bus.nc.subscribe(self._inbox, cb=self._on_message)
        self._keepalive = _KeepAlive(self.spec.ack_wait_s / 4)
        try:
            while not self._stopping:
                if self._pending <= self._refill_at:
                    await self._wait_retry()
                    await self._request(self._next_batch())
                await self._wait_want_more()
            await self._drain()
        finally:
            self._keepalive.cancel()
            await self._sub.unsubscribe()
            self._stopped.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask `run()` to finish: stop pulling, let the handler in progress finish, hand back the rest."""
        self._stopping = True
        self._want_more.set()
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except TimeoutError:
            log.warning("consumer %s did not drain within %.1fs", self.spec.durable, timeout)

    def _next_batch(self) -> int:
        return pull_size(self.spec, self._seconds_per_message)

    async def _request(self, batch: int) -> None:
        expires_ns = int(self.spec.pull_expires_s * 1e9)
        request = {"batch": batch, "expires": expires_ns, "idle_heartbeat": expires_ns // 4}
        self._pending += batch
        self._refill_at = batch
        self._last_request = time.monotonic()
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.spec.stream}.{self.spec.durable}"
        await self._bus.nc.publish(subject, json.dumps(request).encode(), reply=self._inbox)

    async def _wait_retry(self) -> None:
        # A pull the server ended with an error is not asked again at once: during a stream
        # election each one would come straight back (a tight loop of 503s).
        delay = self._retry_at - time.monotonic()
        if delay > 0 and not self._stopping:
            self._want_more.clear()
            try:
                await asyncio.wait_for(self._want_more.wait(), delay)  # stop() cuts the wait short
            except TimeoutError:
                pass

    async def _wait_want_more(self) -> None:
        # Heartbeats arrive every expires/4; hearing nothing for a whole expiry means our
        # requests died with a connection, so forget them and ask again.
        self._want_more.clear()
        try:
            await asyncio.wait_for(self._want_more.wait(), self.spec.pull_expires_s)
        except TimeoutError:
            if time.monotonic() - self._last_heard > self.spec.pull_expires_s:
                self._pending = 0

    async def _drain(self) -> None:
        # Outstanding pull requests end with a 408 at their expiry; until then, anything the
        # server still sends is handed back at once (nak) for the next instance.
        deadline = time.monotonic() + self.spec.pull_expires_s + 1.0
        while self._pending > 0 and time.monotonic() < deadline:
            self._want_more.clear()
            try:
                await asyncio.wait_for(self._want_more.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
        await self._bus.nc.flush(timeout=5)

    async def _on_message(self, msg: Msg) -> None:
        self._last_heard = time.monotonic()
        headers = msg.headers
        if headers and "Status" in headers and not msg.reply:
            self._on_status(headers)
            return
        self._pending -= 1
        self._failed_pulls = 0
        if self._pending <= self._refill_at:
            if self._stopping:
                self._want_more.set()  # _drain() watches the open requests run out
            else:
                # Refilled here, not by waking run(), and then the loop is yielded so nats-py's
                # flusher writes the request now: both would otherwise wait until this
                # subscription's queue is empty, and the server would sit idle meanwhile.
                await self._request(self._next_batch())
                await asyncio.sleep(0)
        if self._stopping:
            # Handed back only after our open pull requests expire: an immediate nak is
            # redelivered into them at once, nak'd again, and so on until the delivery
            # count parks or drops a message no handler ever saw.
            requests_end = self._last_request + self.spec.pull_expires_s - time.monotonic()
            await msg.nak(delay=max(0.0, requests_end) + 0.5)
            return
        await self._process(msg)

    def _on_status(self, headers: dict[str, str]) -> None:
        status = headers.get("Status")
        if status == "100":  # idle heartbeat: the request is still alive
            return
        unfilled = headers.get("Nats-Pending-Messages")
        self._pending = max(0, self._pending - int(unfilled)) if unfilled else 0
        if status not in ("408", "404"):
            self._failed_pulls += 1
            self._retry_at = time.monotonic() + jittered_backoff(self._failed_pulls, PULL_RETRY_BASE_S, PULL_RETRY_CAP_S)
            log.info("consumer %s: pull ended %s %s", self.spec.durable, status, headers.get("Description", ""))
        self._want_more.set()

    async def _process(self, msg: Msg) -> None:
        self._counts["received"] += 1
        seq, delivered = _reply_position(msg.reply)
        if delivered > 1:
            self._counts["redelivered"] += 1
            if seq in self._settled:
                self._counts["duplicates"] += 1
                await msg.ack()
                return
        where = Delivery(seq, delivered, msg.subject)
        try:
            event = decode_on(msg.subject, msg.data, msg.headers)
        except SubjectMismatch as exc:
            await self._park(msg, where, str(exc))
            return
        except InvalidEvent as exc:
            await self._park(msg, where, f"undecodable event: {exc}")
            return
        handler = self._handlers.get(type(event))
        if handler is None:
            self._counts["ignored"] += 1
            await msg.ack()
            return
        if delivered > self.spec.max_attempts:
            await self._park(msg, where, f"delivered {delivered} times without being handled")
            return
        await self._handle(msg, handler, event, where)

    async def _handle(self, msg: Msg, handler: AsyncHandler, event: Event, where: Delivery) -> None:
        self._keepalive.working_on(msg)
        started = time.perf_counter()
        try:
            if tracing.ENABLED:  # off: this check is tracing's whole cost
                await tracing.handle_in_span(handler, event, where, msg.headers, self.spec.durable)
            else:
                await handler(event, where)
        except Exception as exc:  # a handler's bug must not stop the consumer
            self._counts["failed"] += 1
            await self._after_failure(msg, where, exc)
            return
        finally:
            self._keepalive.working_on(None)
        self._counts["handled"] += 1
        self._remember_settled(where.stream_seq)
        await msg.ack()
        took = time.perf_counter() - started
        average = self._seconds_per_message
        self._seconds_per_message = took if average <= 0 else average + (took - average) / 16

    def _remember_settled(self, seq: int) -> None:
        # Bounded by what can be outstanding at once, a few times over.
        self._settled.add(seq)
        self._settled_order.append(seq)
        if len(self._settled_order) > 4 * max(self.spec.max_ack_pending, self.spec.batch):
            self._settled.discard(self._settled_order.popleft())

    async def _after_failure(self, msg: Msg, where: Delivery, exc: Exception) -> None:
        reason = f"handler failed {where.num_delivered} time(s): {type(exc).__name__}: {exc}"
        if where.num_delivered >= self.spec.max_attempts:
            await self._park(msg, where, reason)
            return
        log.warning("consumer %s seq %d: %s; will retry", self.spec.durable, where.stream_seq, reason)
        backoff = self.spec.backoff_s
        await msg.nak(delay=backoff[min(where.num_delivered, len(backoff)) - 1] if backoff else None)

    async def _park(self, msg: Msg, where: Delivery, reason: str) -> None:
        try:
            await park(self._bus, msg, stream=self.spec.stream, consumer=self.spec.durable,
                       stream_seq=where.stream_seq, deliveries=where.num_delivered, reason=reason)
        except BusUnavailable as exc:
            # Not parked means not lost: hand it back and try again later.
            log.error("consumer %s: could not park seq %d (%s); retrying later", self.spec.durable, where.stream_seq, exc)
            await msg.nak(delay=self.spec.backoff_s[-1] if self.spec.backoff_s else None)
            return
        self._counts["parked"] += 1
        self._remember_settled(where.stream_seq)
        log.error("consumer %s parked seq %d: %s", self.spec.durable, where.stream_seq, reason)
        await msg.term()


class _KeepAlive:
    """Tells the server a slow handler is still working, so its message is not redelivered meanwhile.

    One timer per consumer instead of one per message (a timer per message cost ~7% of the
    consumer's CPU). A message that is in its handler at two ticks in a row gets an in-progress
    ack, so the server hears of a slow handler within two ticks and then every tick.
    """

    def __init__(self, tick: float | None) -> None:
        self._tick = tick
        self._working: Msg | None = None
        self._seen_at_last_tick: Msg | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer = asyncio.get_running_loop().call_later(tick, self._fire) if tick else None

    @classmethod
    def idle(cls) -> _KeepAlive:
        """One that never ticks, for a consumer that is not running."""
        return cls(None)

    def working_on(self, msg: Msg | None) -> None:
        """The message a handler works on now, or None once it is settled."""
        self._working = msg

    def _fire(self) -> None:
        msg = self._working
        if msg is not None and msg is self._seen_at_last_tick:
            task = asyncio.get_running_loop().create_task(msg.in_progress())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._seen_at_last_tick = msg
        assert self._tick is not None
        self._timer = asyncio.get_running_loop().call_later(self._tick, self._fire)

    def cancel(self) -> None:
        """Stop ticking."""
        if self._timer is not None:
            self._timer.cancel()
        self._working = self._seen_at_last_tick = None


def _as_async(handler: Handler) -> AsyncHandler:
    """Async handlers run on the loop; plain functions run in a thread so they cannot block it."""
    if inspect.iscoroutinefunction(handler):
        return handler

    async def in_thread(event: Any, where: Delivery) -> None:
        await asyncio.to_thread(handler, event, where)

    return in_thread
