"""Appending events to JetStream: idempotent by event id, optionally conditional, pipelined in bulk.

A leader's decision is published fenced (`FenceToken`): JetStream stores it only while the
newest message on the role's election subjects is still the leader's own LEADER_ELECTED, in
the same step that stores it. A fenced publish is sent once, never retried here: the caller's
term decides whether it may still try again after a lost ack (cluster/leadership/term.py), and
a refusal (`Fenced`) means the term is over.

Acks are routed by our own reply subscription instead of nats-py's `publish_async`: its
futures never time out and an error reply raises inside its callback, leaving the future
pending forever. Here every pending ack has a deadline and every error becomes a value.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec
from nats.aio.msg import Msg

from eventbus import orderedread, pubframe, tracing
from eventbus.connection import Bus, RenewingClient
from eventbus.errors import BusError, BusUnavailable, ConcurrencyConflict, Fenced, StorageFull, storage_full
from eventbus.events import Event, checked, stamp
from eventbus.subjects import aggregate_filter

# JetStream's err_code for a failed expected-last-sequence check: the subject has a newer message.
WRONG_LAST_SEQUENCE = (10071,)
# A clustered stream's leader answers this instead while another expected-last-subject check on the
# same subject (for a fence: the election filter) is still being replicated. It says nothing about the
# fence: the leader's concurrent decisions collide on it, so it is retried, never taken as "fenced".
CHECK_IN_FLIGHT = 10164
# "duplicate message id is in process": a retry of a publish whose first try the clustered stream is
# still storing (during a leader change). Retrying later gets the first try's ack (a duplicate) or
# stores it; it is no refusal (a worker's WORK_STARTED taken as refused went unfenced, found by ops/chaos).
DUPLICATE_IN_PROCESS = 10158
IN_FLIGHT_RETRY_S = (0.002, 0.05)  # jittered pause between tries, first and cap


class Published(msgspec.Struct, frozen=True):
    """Where an event landed: its stamped form, stream sequence, and whether it was a duplicate."""

    event: Event
    seq: int
    duplicate: bool = False


class FenceToken(msgspec.Struct, frozen=True):
    """A leadership's fence: the stream sequence of its LEADER_ELECTED, on the role's election subjects."""

    subject_filter: str  # rr.evt.leader.<role>.LEADER_ELECTED.*: only elections are written there
    seq: int


class Sent(NamedTuple):
    """A stamped event sent without waiting (`Publisher.send`) and the future of its ack, for `Publisher.settle_all`;
    or one already published in full (`published`), which settles as itself."""

    event: Event
    ack: asyncio.Future[_PubAckReply] | None
    published: Published | None = None


class PublisherStats(msgspec.Struct, frozen=True):
    """Events this publisher appended since it started, and how many of those were duplicates."""

    published: int
    duplicates: int


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAckReply(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_PubAckReply)
_NO_RESPONDERS = b"NATS/1.0 503"  # the status line of a reply no stream sent


# Futures the router holds before it drops those no ack will ever answer (timed out, cancelled).
ABANDONED_PURGE_AT = 8192


class _AckRouter:
    """Matches JetStream publish acks to their futures through one wildcard reply subscription."""

    def __init__(self, bus: Bus, purge_at: int = ABANDONED_PURGE_AT) -> None:
        self._bus = bus
        self._prefix = ""
        self._futures: dict[str, asyncio.Future[_PubAckReply]] = {}
        self._ids = itertools.count()
        self._lock = asyncio.Lock()
        self._min_purge_at = self._purge_at = purge_at

    async def _ensure_subscribed(self) -> None:
        if self._prefix:
            return
        async with self._lock:
            if not self._prefix:
                prefix = self._bus.nc.new_inbox() + "."
                sub = await self._bus.nc.subscribe(prefix + "*", cb=self._on_reply)
                if orderedread.supported(self._bus):  # each ack straight from the parser: no Msg, queue or task switch
                    self._bus.nc.direct[sub._id] = self._on_raw_reply  # type: ignore[attr-defined]  # noqa: SLF001
                self._prefix = prefix

    async def send(self, subject: str, data: bytes, block: bytes) -> asyncio.Future[_PubAckReply]:
        """Publish with a reply subject under the header `block` (eventbus/pubframe.py) and return the future of its ack."""
        if not self._prefix:  # once per router: not a coroutine per publish
            await self._ensure_subscribed()
        token = str(next(self._ids))
        future: asyncio.Future[_PubAckReply] = asyncio.get_running_loop().create_future()
        futures = self._futures
        if len(futures) >= self._purge_at:
            futures = self._forget_abandoned()
        futures[token] = future
        nc = self._bus.nc
        try:
            if isinstance(nc, RenewingClient):  # every connected bus's: the frame from our own lines
                await nc.publish_block(subject, self._prefix + token, block, data)
            else:
                await nc.publish(subject, data, reply=self._prefix + token, headers=pubframe.parsed(block))
        except Exception:
            self._futures.pop(token, None)  # the map a purge meanwhile may have replaced
            future.cancel()
            raise
        return future

    def _forget_abandoned(self) -> dict[str, asyncio.Future[_PubAckReply]]:
        """Drop the futures whose ack will never be routed (done without one: timed out, cancelled).

        An answered future leaves as its ack arrives (`_on_reply`). The rest went with a done
        callback each, scheduled on the loop for every ack: a leader sends one per decision. Now
        they go in bulk whenever the dict has doubled since the last purge, O(1) per send overall.
        """
        self._futures = {token: f for token, f in self._futures.items() if not f.done()}
        self._purge_at = max(self._min_purge_at, 2 * len(self._futures))
        return self._futures

    async def _on_reply(self, msg: Msg) -> None:
        self._answer(msg.subject, msg.data, bool(msg.headers and msg.headers.get("Status") == "503"))

    def _on_raw_reply(self, subject: bytes, _reply: bytes, data: bytes, block: bytes | None) -> None:
        # The client's hand-over (eventbus/orderedread.py): a leader gets one ack per decision.
        self._answer(subject.decode(), data, block is not None and block.startswith(_NO_RESPONDERS))

    def _answer(self, subject: str, data: bytes, no_responders: bool) -> None:
        future = self._futures.pop(subject[len(self._prefix) :], None)
        if future is None or future.done():
            return
        if no_responders:
            future.set_exception(BusUnavailable("no JetStream stream answered (no responders)"))
            return
        try:
            future.set_result(_ack_decoder.decode(data))
        except msgspec.DecodeError as exc:
            future.set_exception(BusUnavailable(f"unreadable publish ack: {exc}"))


class Publisher:
    """Appends events for one node; every publish is retried with the same id until acked or out of time."""

    def __init__(self, bus: Bus, *, ack_timeout: float = 5.0, retry_for: float = 30.0, window: int = 4096) -> None:
        self._bus = bus
        self._router = _AckRouter(bus)
        self._ack_timeout = ack_timeout
        self._retry_for = retry_for
        self._window = window
        self._counts = [0, 0]  # published, duplicates

    def statistics(self) -> PublisherStats:
        """Counters so far, also fed to metrics."""
        return PublisherStats(*self._counts)

    def stamp(self, event: Event) -> Event:
        """Give an event its envelope (id, time, source, and the current trace when tracing is on) as this node."""
        return stamp(event, self._bus.node_id, tracing.current_traceparent() if tracing.ENABLED else None)

    async def publish(
        self, event: Event, *, expect_last_seq: int | None = None, fence: FenceToken | None = None
    ) -> Published:
        """Append one event; with `expect_last_seq`, only if its aggregate's last sequence is still that;
        with `fence`, only if no election was stored after the fence's (one try, no retry).

        Raises ConcurrencyConflict when another event of the aggregate was appended since, Fenced
        when the fence is stale, BusUnavailable when no ack came within the retry budget.
        """
        if expect_last_seq is not None and fence is not None:
            raise ValueError("a publish carries one expected-last-subject-sequence check: the fence or the aggregate's")
        event = self.stamp(event)
        block = self._header_block(event, expect_last_seq, fence)
        data = checked(event)  # an event no reader would accept is refused here, not parked everywhere
        if fence is not None:
            return self._count(self._published(event, await self._fenced_send(event.subject(), data, block), None, fence))
        deadline = time.monotonic() + self._retry_for
        delay = 0.05
        while True:
            try:
                reply = await self._send_and_wait(event.subject(), data, block)
                return self._count(self._published(event, reply, expect_last_seq))
            except StorageFull:
                # The server answered: it has no room. Retrying for the whole budget would hide an
                # incident for 30 s (a worker's report, a leader's decision); the caller surfaces it now
                # and decides whether to try again once space is freed.
                raise
            except BusUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def publish_many(self, events: Iterable[Event]) -> list[Published]:
        """Append many events pipelined (up to `window` acks in flight); order of the log follows input order.

        A publish whose ack fails or times out is retried alone with the same id, so
        JetStream's dedupe makes the bulk append exactly-once.
        """
        stamped = [self.stamp(e) for e in events]
        futures: list[asyncio.Future[_PubAckReply]] = []
        oldest = 0  # index of the oldest ack not yet known to be settled
        for event in stamped:
            while len(futures) - oldest >= self._window:
                if not futures[oldest].done():
                    await asyncio.wait([futures[oldest]], timeout=self._ack_timeout)
                oldest += 1
            futures.append(await self._router.send(event.subject(), checked(event), self._header_block(event, None)))
        await asyncio.wait(futures, timeout=self._ack_timeout) if futures else None
        try:
            return [await self._settle(event, fut) for event, fut in zip(stamped, futures)]
        except BaseException:
            # The acks behind the one that raised are never settled: observe their errors so
            # asyncio does not log "Future exception was never retrieved" for each.
            for future in futures:
                if future.done() and not future.cancelled():
                    future.exception()
            raise

    async def send(self, event: Event, *, fence: FenceToken | None = None) -> Sent:
        """Send one event (stamped here unless it is) without waiting for its ack: a window of decisions
        goes out back to back and `settle_all` awaits their acks together, one deadline for the window."""
        event = self.stamp(event)
        return Sent(event, await self._router.send(event.subject(), checked(event), self._header_block(event, None, fence)))

    async def settle_all(self, sent: Sequence[Sent], *, fence: FenceToken | None = None) -> list[Published | Exception]:
        """The outcome of each `send`, as `publish` would return or raise it (the error as a value).

        An ack that did not come within the ack timeout, or that says the stream was away or busy
        with another check, is asked again by `publish` with the same id (dedupe answers if the first
        try was stored), those side by side; with a `fence` that is one more try, as for `publish`,
        and the term retries after that.
        """
        pending = [s.ack for s in sent if s.ack is not None and not s.ack.done()]
        if pending:
            await self._acked(pending)
        out = [self._answered(one, fence) for one in sent]
        again = [i for i, outcome in enumerate(out) if outcome is None]
        retried = await asyncio.gather(*(self.publish(sent[i].event, fence=fence) for i in again), return_exceptions=True)
        for i, outcome in zip(again, retried):
            if not isinstance(outcome, (Published, Exception)):
                raise outcome  # a cancellation, never an outcome
            out[i] = outcome
        return [o for o in out if o is not None]

    async def _acked(self, pending: Sequence[asyncio.Future[_PubAckReply]]) -> None:
        """Wait until every ack of `pending` (in the order sent) came, or the ack timeout passed."""
        # The stream answers one connection's publishes in the order they came: once the last ack is
        # in, nearly all are. Waiting for it alone first puts one callback on the loop, not one per ack.
        deadline = time.monotonic() + self._ack_timeout
        await asyncio.wait(pending[-1:], timeout=self._ack_timeout)
        missing = [f for f in pending if not f.done()]
        if missing:
            await asyncio.wait(missing, timeout=max(0.0, deadline - time.monotonic()))

    def _answered(self, sent: Sent, fence: FenceToken | None) -> Published | Exception | None:
        """A sent event's outcome from its ack; None when it must be asked again (no ack, stream away or busy)."""
        ack = sent.ack
        if ack is None:
            return sent.published
        if not ack.done() or ack.cancelled() or ack.exception() is not None:  # the exception is observed here
            ack.cancel()
            return None
        reply = ack.result()
        if reply.error is not None and (reply.error.code == 503 or reply.error.err_code in (CHECK_IN_FLIGHT, DUPLICATE_IN_PROCESS)):
            return None
        try:
            return self._count(self._published(sent.event, reply, None, fence))
        except Exception as exc:  # noqa: BLE001 - each event's own outcome (Fenced, StorageFull ...), for the caller to judge
            return exc

    async def _settle(self, event: Event, future: asyncio.Future[_PubAckReply]) -> Published:
        if future.done() and future.exception() is None:
            return self._count(self._published(event, future.result(), None))
        future.cancel()
        return await self.publish(event)

    async def _fenced_send(self, subject: str, data: bytes, block: bytes) -> _PubAckReply:
        """Send a fenced decision, again while a clustered leader says a check on the fence is in flight.

        One answer is final: stored, or refused for a newer election (the server's own check, never
        retried). Only the in-flight answer is retried, within the publisher's ack timeout.
        """
        deadline = time.monotonic() + self._ack_timeout
        pause = IN_FLIGHT_RETRY_S[0]
        while True:
            reply = await self._send_and_wait(subject, data, block)
            if reply.error is None or reply.error.err_code != CHECK_IN_FLIGHT or time.monotonic() >= deadline:
                return reply
            await asyncio.sleep(random.uniform(pause / 2, pause))
            pause = min(pause * 2, IN_FLIGHT_RETRY_S[1])

    async def _send_and_wait(self, subject: str, data: bytes, block: bytes) -> _PubAckReply:
        future = await self._router.send(subject, data, block)
        try:
            return await asyncio.wait_for(future, timeout=self._ack_timeout)
        except TimeoutError:
            raise BusUnavailable(f"no publish ack for {subject} within {self._ack_timeout}s") from None

    def _count(self, published: Published) -> Published:
        self._counts[0] += 1
        self._counts[1] += published.duplicate
        return published

    @staticmethod
    def _header_block(event: Event, expect_last_seq: int | None, fence: FenceToken | None = None) -> bytes:
        # The dedupe id, the one expected-last-subject-sequence check (the term's fence or the
        # aggregate's last sequence), the trace: the headers the server checks and stores.
        if fence is not None:
            expected = pubframe.fence_lines(fence.seq, fence.subject_filter)
        elif expect_last_seq is not None:
            expected = pubframe.expected_lines(expect_last_seq, aggregate_filter(event.aggregate, event.aggregate_id()))
        else:
            expected = b""
        return pubframe.header_block(event.id, expected, event.trace)

    @staticmethod
    def _published(
        event: Event, reply: _PubAckReply, expect_last_seq: int | None, fence: FenceToken | None = None
    ) -> Published:
        if reply.error is None:
            return Published(event, reply.seq, reply.duplicate)
        err = reply.error
        if err.err_code in WRONG_LAST_SEQUENCE and fence is not None:
            raise Fenced(fence.subject_filter, fence.seq, err.description)
        if err.err_code in (*WRONG_LAST_SEQUENCE, CHECK_IN_FLIGHT) and expect_last_seq is not None:
            raise ConcurrencyConflict(aggregate_filter(event.aggregate, event.aggregate_id()), expect_last_seq)
        if storage_full(err.err_code, err.description or ""):
            raise StorageFull(f"{event.type_name()} not stored: JetStream storage is full ({err.description}, "
                              f"err_code {err.err_code}); free space in the server's store dir or lower "
                              "streams.*_max_gib")
        if err.code == 503 or err.err_code in (CHECK_IN_FLIGHT, DUPLICATE_IN_PROCESS):
            raise BusUnavailable(f"JetStream unavailable: {err.description} (err_code {err.err_code})")
        raise BusError(f"publish of {event.type_name()} refused: {err.description} (err_code {err.err_code})")

