"""Reading one aggregate's few records with JetStream's batched direct gets: one request, no consumer.

`history.replay` makes an ordered consumer per read: a create, an info and the deliveries (three
round trips), flow control, and a consumer the server drops only once it notices no one listens.
A batched direct get (nats-server >= 2.11, a stream with `allow_direct`, as every rr stream has)
answers "the next `batch` records on this filter from this sequence" as one reply stream ended by
a `204 EOB` status saying how many more match. For an aggregate's own filter (`rr.evt.work.w-1.>`)
the server's subject index knows the last block holding it, but a batch larger than what is left
makes it scan the rest of that block for a match that is not there, so a read asks for one record
first and then for exactly what the server says is left (`read_aggregate`): a work item's own
records on a cold block cost the server 24 ms (p50) this way at 1M records against 40-55 ms with
a batch of 256 and 35-37 ms by a consumer. Not for filters matched all over the log (leadership, a node's
membership, event types): a batch fills itself from past the range asked (`up_to_seq` is honoured
only with `multi_last`), 158 ms of the server's CPU against 2.5 ms by a consumer for a context read.

With `multi_last` and `up_to_seq` the server answers instead each matching subject's newest record
at or before a sequence from its per-subject index, whatever the log's length (`last_per_subject`):
membership at a point of a 22M-record log in 0.04-0.3 s, where reading it from the start took 74 s.

The server adds its own headers (`Nats-Sequence`, `Nats-Subject`, ...) to each record; those are
taken off, so a record read here equals the one an ordered consumer delivers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import msgspec
import nats.errors
from nats.aio.msg import Msg

from eventbus.connection import Bus
from eventbus.errors import BusError, BusUnavailable, TooManyResults
from eventbus.history import Record
from eventbus.streams import EVENTS_STREAM

# Records asked per request: a work item has about ten, a batch or a model a few dozen; more are paged.
BATCH = 256
TIMEOUT_S = 10.0
_SERVER_HEADERS = frozenset({"Nats-Stream", "Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Num-Pending",
                             "Nats-Last-Sequence", "Nats-UpTo-Sequence"})
_END_OF_BATCH, _NOT_FOUND, _TOO_MANY, _NO_RESPONDERS = "204", "404", "413", "503"


class _Page(msgspec.Struct):
    """One batch's records in order, and how many more match after the last (the server's pending count)."""

    records: list[Record]
    pending: int


async def read_aggregate(bus: Bus, subject: str, start_seq: int, end_seq: int, *, stream: str = EVENTS_STREAM,
                         batch: int = BATCH) -> list[Record]:
    """The records on one aggregate's `subject` from `start_seq` to `end_seq`, in order, `batch` at most a request (raises BusError).

    The first request asks for one record; its reply says how many more match, and each later
    request asks for no more than that. A batch larger than what is left makes the server look
    on for a match that is not there: it scans every record after the aggregate's last one to the
    end of the message block holding it, matching each subject against the filter (~35 ms of its
    CPU at 1M records, three times what the records themselves cost; ops/bench/README.md,
    "Where a `--work` timeline's p99 goes at 1M records").
    """
    records: list[Record] = []
    seq, asked = max(1, start_seq), 1
    while seq <= end_seq:
        page = await _batch(bus, stream, subject, seq, asked)
        records += [r for r in page.records if r.seq <= end_seq]
        if not page.pending or not page.records or page.records[-1].seq >= end_seq:
            break
        seq, asked = page.records[-1].seq + 1, min(batch, page.pending)
    return records


async def read_aggregates(bus: Bus, subjects: Iterable[str], start_seq: int, end_seq: int, *,
                          stream: str = EVENTS_STREAM) -> tuple[dict[int, Record], int]:
    """The records on any of the aggregates' `subjects`, by sequence, one request each at once; and how many were read."""
    pages = await asyncio.gather(*(read_aggregate(bus, s, start_seq, end_seq, stream=stream) for s in subjects))
    return {record.seq: record for page in pages for record in page}, sum(len(page) for page in pages)


async def last_per_subject(bus: Bus, subject_filter: str, up_to_seq: int, *, stream: str = EVENTS_STREAM,
                           batch: int = BATCH) -> list[Record]:
    """The newest record of each subject matching `subject_filter` at or before `up_to_seq`, oldest first.

    Raises TooManyResults when more subjects match than the server answers in one such request
    (nats-server refuses past 1,024), BusError otherwise. Paged `batch` at a time: a page goes on
    from past the last record the one before held, under the same `up_to_seq`. An `up_to_seq` past
    the stream's last sequence is answered with nothing: ask up to a stored one.
    """
    records: list[Record] = []
    seq = 1
    while up_to_seq >= 1:
        request = {"multi_last": [subject_filter], "up_to_seq": up_to_seq, "seq": seq, "batch": batch}
        page = await _ask(bus, stream, subject_filter, request)
        records += page.records
        if not page.pending or not page.records:
            break
        seq = page.records[-1].seq + 1
    return records


async def _batch(bus: Bus, stream: str, subject: str, seq: int, batch: int) -> _Page:
    """One batched direct get: up to `batch` records on `subject` from `seq`."""
    return await _ask(bus, stream, subject, {"seq": seq, "next_by_subj": subject, "batch": batch})


async def _ask(bus: Bus, stream: str, subject: str, request: dict[str, object]) -> _Page:
    """One direct get answered as a reply stream: its records, and the server's count of those left."""
    records: list[Record] = []
    ended: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Msg) -> None:
        headers = msg.headers or {}
        if "Status" in headers:
            if not ended.done():
                ended.set_result(headers)
        elif not ended.done():
            records.append(_record(msg, headers))

    sub = await bus.nc.subscribe(bus.nc.new_inbox(), cb=on_msg)
    try:
        await bus.nc.publish(f"$JS.API.DIRECT.GET.{stream}", msgspec.json.encode(request), reply=sub.subject)
        status = await asyncio.wait_for(ended, TIMEOUT_S)
    except (TimeoutError, nats.errors.Error) as exc:
        raise BusUnavailable(f"JetStream did not answer a direct get of {subject} on {stream}: "
                             f"{exc or type(exc).__name__}") from None
    finally:
        await sub.unsubscribe()
    return _page(stream, subject, records, status)


def _page(stream: str, subject: str, records: list[Record], status: dict[str, str]) -> _Page:
    code = status["Status"]
    if code == _END_OF_BATCH:
        return _Page(records=records, pending=int(status.get("Nats-Num-Pending", "0")))
    if code == _NOT_FOUND:  # nothing (more) on the subject from the sequence asked
        return _Page(records=records, pending=0)
    if code == _TOO_MANY:
        raise TooManyResults(f"direct get of the newest record of each subject matching {subject} on stream {stream}: "
                             "more subjects match than the server answers at once")
    if code == _NO_RESPONDERS:
        raise BusUnavailable(f"no server answers direct gets on stream {stream} (not created, or JetStream down)")
    description = next((v for k, v in status.items() if str(k).lower().endswith("description")), "")
    raise BusError(f"direct get of {subject} on stream {stream} refused: {code} {description}"
                   " (the stream needs allow_direct, nats-server >= 2.11)")


def _record(msg: Msg, headers: dict[str, str]) -> Record:
    own = {k: v for k, v in headers.items() if k not in _SERVER_HEADERS}
    if own.keys() == {"Nats-Msg-Id"}:
        own = {}  # the publisher's dedupe id only: None, as the ordered read gives it (history.Record)
    return Record(int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data, own or None)
