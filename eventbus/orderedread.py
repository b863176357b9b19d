"""An ordered read of a stream's range, each message handed over straight from the client's parser.

nats-py's ordered consumer turns every message into a `Msg` with a parsed header dict, queues
it, and wakes a task to run the callback: ~5 of the ~7 us of client CPU a message costs a
rebuild here (ops/bench/README.md, "Rebuilds"). This read sets up the same kind of consumer
(ephemeral, in memory, no acks, flow control, idle heartbeats, one delivery) and has the
connection call it with the message's raw parts (eventbus/connection.py `RenewingClient.direct`):
no Msg, no queue, no task switch, and a header block parsed only when it holds more than what the
publisher set for the server alone, its `Nats-Msg-Id` and a fence's expected-last-subject check (a
lease copy's `Nats-Stream-Source`, a trace context). `follow` is the
same read without an end, for the services' live folds (eventbus/follow.py): a leader receives
two stored events per assignment, and nats-py's Msg path was a fifth of its CPU (ops/bench/README.md).

What nats-py's ordered consumer guarantees is kept: records in stream order, none twice, none
skipped. A gap in the consumer's own sequence (a message lost on the way, a heartbeat saying
more were sent) drops the consumer and starts a new one after the last record handed over; so
does, for a live follow, a consumer silent for two heartbeats (the server lost it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import NoReturn

import nats.aio.subscription
import nats.errors
import nats.js.errors
import nats.protocol.parser
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from eventbus import headerlines
from eventbus.connection import Bus, RenewingClient
from eventbus.errors import BusUnavailable
from eventbus.tasks import raise_if_cancelled

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0  # as nats-py's ordered consumer: the server tells an idle reader how far it got
SILENT_S = 2 * HEARTBEAT_S  # a live follow hearing nothing for this long (not even a heartbeat) starts a new consumer
INACTIVE_S = 5.0  # a consumer without a subscriber (a read that ended or died) is removed by the server after this
SLOW_CREATION_S = 1.0  # a consumer's creation that took this long is logged
MAX_FRUITLESS = 5  # gaps in a row with nothing read between them before the read gives up (BusUnavailable)
_SILENT = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)

# A stored event's block when its publisher set only the dedupe id: nothing a reader needs.
_HEADER_LINE = b"NATS/1.0\r\n"
_PLAIN_BLOCK = _HEADER_LINE + b"Nats-Msg-Id:"
_PLAIN_SIZE = len(_PLAIN_BLOCK)
# A fenced decision's block adds the check the server made before storing it: nothing a reader needs either.
_EXPECTED_SEQ = b"Nats-Expected-Last-Subject-Sequence: "
_EXPECTED_SUBJECT = b"\r\nNats-Expected-Last-Subject-Sequence-Subject: "
_STATUS_LINE = b"NATS/1.0 "  # a status (heartbeat, flow control, consumer gone): no stored message
_LAST_CONSUMER = "Nats-Last-Consumer"
_STALLED = "Nats-Consumer-Stalled"


# The two nats-py internals the raw hand-over relies on: its parser awaiting the client's
# `_process_msg` for every message, and a subscription's id in `_id`. A nats-py that renames
# either reads through its own ordered consumer instead (slower, never a read that waits forever).
NATS_PY_HOOKS = ("_process_msg" in nats.protocol.parser.Parser.parse.__code__.co_names
                 and "_id" in nats.aio.subscription.Subscription.__init__.__code__.co_names)


def supported(bus: Bus) -> bool:
    """Whether this bus's client hands raw messages over (every `eventbus.connection.connect` one does)."""
    return NATS_PY_HOOKS and isinstance(bus.nc, RenewingClient)


def headers_of(block: bytes | None) -> dict[str, str] | None:
    """A header block as a dict, or None when there is none or it holds only what the server alone reads.

    The `Nats-Msg-Id` serves the server's deduplication, and a fence's two expected-last-subject
    lines its check before storing (a leader's every decision carries them): no reader of the log
    reads either. A block with any other line is parsed.
    """
    if block is None or _for_the_server_only(block):
        return None
    return headerlines.parse(block[len(_HEADER_LINE):]) or None  # nats-py's rule: an empty dict is None


def _for_the_server_only(block: bytes) -> bool:
    """Whether the block is `Nats-Msg-Id` alone, or it and then the two expected-last-subject lines."""
    if not block.startswith(_PLAIN_BLOCK):
        return False
    end = block.find(b"\r\n", _PLAIN_SIZE)  # of the id's line; the block's closing empty line starts at len - 2
    if end == len(block) - 4:
        return True
    if not block.startswith(_EXPECTED_SEQ, end + 2):
        return False
    end = block.find(b"\r\n", end + 2)
    return block.startswith(_EXPECTED_SUBJECT, end) and block.find(b"\r\n", end + 2) == len(block) - 4


class _Gap(Exception):
    """The consumer skipped a message: read again after the last one handed over."""


class _Reader:
    """One consumer's messages: checks their order and hands each stored one to `on_record`."""

    def __init__(self, on_record: Callable[[int, str, bytes, dict[str, str] | None], None], end: int,
                 stop: Callable[[], bool] | None, *, live: bool = False) -> None:
        self._on_record = on_record
        self._end = end
        self._stop = stop
        self._until_caught_up = not live  # a live follow goes on when nothing more is pending
        self.heard = 0  # messages and statuses received: a live follow's sign that its consumer is there
        self.expected = 1  # the consumer's next delivery sequence
        self.last_seq = 0  # the stream sequence of the last stored message seen
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __call__(self, subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> str | None:
        """One message from the parser; returns a subject to answer with an empty message (flow control)."""
        if self.finished.done():
            return None
        self.heard += 1
        if block is not None and block.startswith(_STATUS_LINE):
            return self._status(reply, block)
        tokens = reply.split(b".")
        at = 0 if len(tokens) == 9 else 2  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        if int(tokens[6 + at]) != self.expected:
            self.finished.set_exception(_Gap())
            return None
        self.expected += 1
        seq = self.last_seq = int(tokens[5 + at])
        if seq <= self._end:
            # `headers_of`'s first test inlined: nearly every stored event's block is the plain one.
            plain = block is None or (block.startswith(_PLAIN_BLOCK) and block.find(b"\r\n", _PLAIN_SIZE) == len(block) - 4)
            self._on_record(seq, subject.decode(), data, None if plain else headers_of(block))
        if seq >= self._end or (tokens[8 + at] == b"0" and self._until_caught_up) or (self._stop is not None and self._stop()):
            self.finished.set_result(None)
        return None

    def _status(self, reply: bytes, block: bytes) -> str | None:
        if reply:
            return reply.decode()  # flow control: everything before it was handed over already
        headers = headerlines.parse(block[block.find(b"\r\n") + 2:])
        if block.startswith(b"NATS/1.0 100") and _LAST_CONSUMER in headers:  # an idle heartbeat
            if int(headers[_LAST_CONSUMER]) != self.expected - 1:
                self.finished.set_exception(_Gap())
                return None
            return headers.get(_STALLED)
        if not block.startswith(b"NATS/1.0 100"):  # the consumer was deleted under us, or worse
            self.finished.set_exception(_Gap())
        return None


async def read(
    bus: Bus, on_record: Callable[[int, str, bytes, dict[str, str] | None], None], *, stream: str,
    subjects: Sequence[str], start_seq: int, start_time: dt.datetime | None, end: int,
    idle_timeout: float, stop: Callable[[], bool] | None = None, progress: Callable[[], int],
) -> None:
    """Hand every stored message on `subjects` from the start to `end` to `on_record(seq, subject, data, headers)`.

    Ends at `end`, when nothing more is pending, or once `stop()` says so; raises BusUnavailable
    when nothing arrives for `idle_timeout` or the server does not answer.
    """
    fruitless = 0  # consumers in a row that ended on a gap before handing anything over
    while True:
        reader = _Reader(on_record, end, stop)
        try:
            await _one_consumer(bus, reader, stream, subjects, start_seq, start_time, idle_timeout, progress)
            return
        except _Gap:
            fruitless = 0 if reader.last_seq else fruitless + 1
            if fruitless >= MAX_FRUITLESS:  # a server that keeps dropping its consumers: as unavailable as a silent one
                raise BusUnavailable(f"reading {stream}: {fruitless} consumers in a row lost messages before the first") from None
            if reader.last_seq:
                start_seq, start_time = reader.last_seq + 1, None
            log.warning("reading %s: a message lost after seq %d; reading on from there", stream, start_seq - 1)


async def _one_consumer(
    bus: Bus, reader: _Reader, stream: str, subjects: Sequence[str], start_seq: int,
    start_time: dt.datetime | None, idle_timeout: float, progress: Callable[[], int],
) -> None:
    async with _handing_to(bus, reader) as inbox:
        info = await _created(bus, stream, _config(inbox, subjects, start_seq, start_time))
        if not info.num_pending:
            return
        await wait_done(reader.finished, progress, idle_timeout)
    await drained(bus, stream)


@contextlib.asynccontextmanager
async def _handing_to(bus: Bus, reader: _Reader) -> AsyncIterator[str]:
    """A fresh inbox whose messages go straight from the client's parser to `reader`, while inside."""
    client = bus.nc
    assert isinstance(client, RenewingClient)
    inbox = client.new_inbox()
    sub = await client.subscribe(inbox)
    client.direct[sub._id] = reader  # noqa: SLF001 - nats-py names a subscription's id only so
    try:
        yield inbox
    finally:
        client.direct.pop(sub._id, None)  # noqa: SLF001
        # Not deleted: a node may create consumers but not delete them (servicekit/auth/permissions.py);
        # with no subscriber left the server removes it after INACTIVE_S, as it does nats-py's ordered ones.
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()


async def drained(bus: Bus, stream: str) -> None:
    """Wait until the server has sent us what it pushed to a read that just unsubscribed: one round trip.

    A read ends at its end sequence while its consumer still pushes what follows, up to a flow
    control window (18 MB at a year's log), and nats-py only queues the unsubscribe for its
    flusher task. A caller that then holds the loop (settling and encoding a 5.12M-record state)
    left all of it unread in the server's buffer past its 10 s write deadline, and the server
    dropped the connection as a slow consumer. The pong comes after the last of it.
    """
    try:
        await bus.nc.flush(timeout=bus.api_timeout_s)  # type: ignore[arg-type]  # nats-py types a float wait as int
    except nats.errors.Error as exc:  # the read itself is whole: a reconnect or a slow pong is not its failure
        log.warning("reading %s: the server did not confirm the read's end (%s)", stream, exc or type(exc).__name__)


def _config(inbox: str, subjects: Sequence[str], start_seq: int | None, start_time: dt.datetime | None) -> ConsumerConfig:
    config = ConsumerConfig(
        deliver_subject=inbox, ack_policy=AckPolicy.NONE, max_deliver=1, flow_control=True,
        idle_heartbeat=HEARTBEAT_S, mem_storage=True, num_replicas=1, inactive_threshold=INACTIVE_S,
        deliver_policy=DeliverPolicy.ALL,
    )
    if len(subjects) == 1:
        config.filter_subject = subjects[0]
    else:
        config.filter_subjects = list(subjects)
    if start_time is not None:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        # nats-py types this field as a datetime but sends it as it is, and the server wants RFC 3339 text.
        config.opt_start_time = start_time.astimezone(dt.UTC).isoformat()  # type: ignore[assignment]
    elif start_seq is None:
        config.deliver_policy = DeliverPolicy.NEW
    elif start_seq > 1:
        config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, start_seq
    return config


async def _created(bus: Bus, stream: str, config: ConsumerConfig) -> nats.js.api.ConsumerInfo:
    clock = time.perf_counter()
    try:
        info = await bus.js.add_consumer(stream, config, timeout=bus.api_timeout_s)
    except nats.js.errors.NotFoundError:
        raise BusUnavailable(f"stream {stream} does not exist: run `rr streams init`") from None
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer creating a reader of {stream}: {exc or type(exc).__name__}") from None
    seconds = time.perf_counter() - clock
    if seconds >= SLOW_CREATION_S:  # the server counts what the filters match from the start: slow on a long log
        log.info("reading %s: creating its consumer (start %s, %d filters) took %.1fs", stream,
                 config.opt_start_seq or config.opt_start_time or 1, len(config.filter_subjects or [config.filter_subject]), seconds)
    return info


async def wait_done(done: asyncio.Future[None], progress: Callable[[], int], idle_timeout: float) -> None:
    """Wait for `done`, raising BusUnavailable only when `progress()` stands still for `idle_timeout` (a long read may take minutes)."""
    last = -1
    while not done.done():
        if progress() == last:
            raise BusUnavailable(f"history read stalled: nothing for {idle_timeout}s")
        last = progress()
        await asyncio.wait([done], timeout=idle_timeout)
    done.result()  # a gap raises here


async def follow(
    bus: Bus, on_record: Callable[[int, str, bytes, dict[str, str] | None], None], *, stream: str,
    subjects: Sequence[str], start_seq: int | None,
) -> NoReturn:
    """Hand every stored message on `subjects` from `start_seq` (None: those stored from now on) to `on_record`, until cancelled.

    Raises BusUnavailable when the server does not answer, or keeps losing its consumers before a first message.
    """
    fruitless = 0  # consumers in a row that ended on a gap before handing anything over
    while True:
        reader = _Reader(on_record, sys.maxsize, None, live=True)
        try:
            await _one_live_consumer(bus, reader, stream, subjects, start_seq)
        except _Gap:
            fruitless = 0 if reader.last_seq else fruitless + 1
            if fruitless >= MAX_FRUITLESS:
                raise BusUnavailable(f"following {stream}: {fruitless} consumers in a row lost messages before the first") from None
            if reader.last_seq:
                start_seq = reader.last_seq + 1
            log.warning("following %s: a message or the consumer lost after seq %s; following on from there", stream,
                        "(start)" if start_seq is None else start_seq - 1)


async def _one_live_consumer(bus: Bus, reader: _Reader, stream: str, subjects: Sequence[str], start_seq: int | None) -> NoReturn:
    async with _handing_to(bus, reader) as inbox:
        await _created(bus, stream, _config(inbox, subjects, start_seq, None))
        await _wait_gap(reader)


async def _wait_gap(reader: _Reader) -> NoReturn:
    """Until the reader finds a gap or hears nothing for SILENT_S (raising _Gap), or the task is cancelled."""
    while True:
        raise_if_cancelled()  # one that the consumer's creation lost (Python 3.11's wait_for)
        heard = reader.heard
        await asyncio.wait([reader.finished], timeout=SILENT_S)
        if reader.finished.done():
            reader.finished.result()  # a live reader ends only on a gap: this raises it
            raise _Gap
        if reader.heard == heard:
            raise _Gap
