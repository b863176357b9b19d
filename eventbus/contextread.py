"""Reading a range of the log's context (leadership, lease copies, membership) from RR_CONTEXT, not RR_EVENTS.

The context is ~1.5% of RR_EVENTS' records, spread over all of it: a consumer reading it mid-log
makes the server load and count the message blocks of the whole range and past it (at 22M records
80 ms to 5.8 s, ops/bench/README.md). RR_CONTEXT holds the server's copies of those records alone
(eventbus/streams.py), in RR_EVENTS' order, each naming its RR_EVENTS sequence in its
`Nats-Stream-Source: RR_EVENTS <seq> <filters> <destinations> <subject> <id>` header. A range of
RR_EVENTS sequences is found there by interpolation over a few direct gets, read by one consumer,
and each record handed over as RR_EVENTS holds it: under its RR_EVENTS sequence, without that header.

What RR_CONTEXT cannot give as RR_EVENTS holds it is read from RR_EVENTS:
- a lease copy's own source header (its KV revision, which the fences verify) is replaced by the
  second copy's, so the copies in the range are read from RR_EVENTS by sequence, a direct get each;
- what it has not copied yet (sourcing is asynchronous) or no longer keeps, and the whole range
  when it does not exist or is empty: `fallback` (the reader RR_EVENTS would have been read with).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import nats.errors
import nats.js.errors

from eventbus import directreads
from eventbus.connection import Bus
from eventbus.errors import BusUnavailable
from eventbus.history import Record, replay
from eventbus.leasecopy import SOURCE_HEADER, is_copy
from eventbus.streams import CONTEXT_STREAM, CONTEXT_SUBJECTS, EVENTS_STREAM

Read = tuple[dict[int, Record], int]  # records by RR_EVENTS sequence, and how many records were read for them
Fallback = Callable[[Sequence[str], int, int], Awaitable[Read]]

# The range's ends are narrowed to this many RR_CONTEXT records: reading a few hundred records too
# many costs the server less than one more round trip.
WINDOW = 256
_PROBES_MAX = 64  # every other step halves the bracket at least: 2 x log2(records) steps at worst


class _Gone(Exception):
    """A probed RR_CONTEXT record was not there (aged out meanwhile): read the range from RR_EVENTS."""


def covers(filters: Sequence[str]) -> bool:
    """Whether RR_CONTEXT holds every record the subject `filters` match in RR_EVENTS."""
    return bool(filters) and all(any(f.startswith(c[:-1]) for c in CONTEXT_SUBJECTS) for f in filters)


def source_seq(headers: dict[str, str] | None) -> int | None:
    """The RR_EVENTS sequence a copy's `Nats-Stream-Source` header names; None when it names none."""
    tokens = (headers or {}).get(SOURCE_HEADER, "").split(" ")
    if len(tokens) < 2 or tokens[0] != EVENTS_STREAM or not (tokens[1].isascii() and tokens[1].isdigit()):
        return None
    return int(tokens[1])


def own_headers(headers: dict[str, str] | None) -> dict[str, str] | None:
    """A copy's headers as RR_EVENTS holds them (for a record that is not a lease copy): the source header off."""
    own = {k: v for k, v in (headers or {}).items() if k != SOURCE_HEADER}
    return None if own.keys() <= {"Nats-Msg-Id"} else own  # as history.Record gives a plain event's


def probes(lo: tuple[int, int], hi: tuple[int, int], target: int, step: int) -> list[int]:
    """The RR_CONTEXT sequences to look at at once between `lo` and `hi`, each (sequence, its RR_EVENTS sequence).

    A window around the interpolated guess: where the copies are spread evenly, as the log's
    records are, one round trip brackets `target` within WINDOW. Every other step adds the midpoint,
    for where they bunch up (a flapping host's minutes), so a bad guess still halves the bracket.
    """
    (low, low_src), (high, high_src) = lo, hi
    guess = low + (target - low_src) * (high - low) // max(1, high_src - low_src)
    wanted = [guess - WINDOW // 2, guess + WINDOW // 2] + ([(low + high) // 2] if step % 2 else [])
    return sorted({min(high - 1, max(low + 1, at)) for at in wanted})


async def read(bus: Bus, filters: Sequence[str], start: int, end: int, fallback: Fallback) -> Read:
    """The records matching `filters` (which RR_CONTEXT must cover) from RR_EVENTS sequence `start` to `end`."""
    if end < start:
        return {}, 0
    if not covers(filters):
        return await fallback(filters, start, end)
    try:
        copies = await ends(bus)
        if copies is None:  # not provisioned yet (`rr streams init`), or empty
            return await fallback(filters, start, end)
        return await _read_copied(bus, filters, start, end, fallback, *copies)
    except _Gone:  # a probed copy aged out meanwhile
        return await fallback(filters, start, end)


Copy = tuple[int, int]  # one RR_CONTEXT record: its sequence, and its RR_EVENTS sequence


async def ends(bus: Bus) -> tuple[Copy, Copy] | None:
    """RR_CONTEXT's first and last copy: one round trip, no stream info; None when it does not exist or is empty."""
    try:
        lo, hi = await asyncio.gather(_source_of(bus, {"seq": 1, "next_by_subj": ">"}), _source_of(bus, {"last_by_subj": ">"}))
    except _Gone:
        return None
    return lo, hi


def lacks_before(first: Copy, start: int) -> bool:
    """Whether RR_CONTEXT, whose first copy is `first`, has dropped copies of RR_EVENTS records from `start` on."""
    return first[0] > 1 and first[1] > start


async def _read_copied(bus: Bus, filters: Sequence[str], start: int, end: int, fallback: Fallback,
                       lo: tuple[int, int], hi: tuple[int, int]) -> Read:
    """`read` once RR_CONTEXT's first and last copy are known (each (sequence, RR_EVENTS sequence)): its part, RR_EVENTS the rest."""
    parts: list[Awaitable[Read]] = []
    if lacks_before(lo, start):  # it dropped its oldest: what it no longer keeps of the range
        parts.append(fallback(filters, start, min(end, lo[1] - 1)))
    if hi[1] < end:  # not copied yet
        parts.append(fallback(filters, max(start, hi[1] + 1), end))
    if lo[1] <= end and hi[1] >= start:
        parts.append(_read_between(bus, filters, start, end, lo, hi))
    found: dict[int, Record] = {}
    count = 0
    for records, read_count in await asyncio.gather(*parts):
        found.update(records)
        count += read_count
    return found, count


async def _read_between(bus: Bus, filters: Sequence[str], start: int, end: int, lo: tuple[int, int],
                        hi: tuple[int, int]) -> Read:
    """The copies of the range that RR_CONTEXT holds between `lo` and `hi` (each (sequence, RR_EVENTS sequence))."""
    (low, _), (_, high) = await asyncio.gather(_narrowed(bus, lo, hi, start), _narrowed(bus, lo, hi, end + 1))
    found: dict[int, Record] = {}
    leases: list[tuple[int, str]] = []

    def keep(record: Record) -> None:
        seq = source_seq(record.headers)
        if seq is None or not start <= seq <= end:
            return
        if is_copy(record.subject):
            leases.append((seq, record.subject))
        else:
            found[seq] = Record(seq, record.subject, record.data, own_headers(record.headers))

    count = await replay(bus, keep, stream=CONTEXT_STREAM, subjects=filters, start_seq=low, end_seq=high)
    originals = await asyncio.gather(*(directreads.read_aggregate(bus, subject, seq, seq, batch=1)
                                       for seq, subject in leases))
    found.update((r.seq, r) for page in originals for r in page)
    return found, count + len(leases)


async def _narrowed(bus: Bus, lo: tuple[int, int], hi: tuple[int, int], target: int) -> tuple[int, int]:
    """(lo, hi) RR_CONTEXT sequences at most WINDOW apart around the first copy of RR_EVENTS sequence `target` or later.

    Every copy of `target` or later is at `hi` or after it, every earlier one at `lo` or before.
    """
    if lo[1] >= target:
        return lo[0], lo[0]
    if hi[1] < target:
        return hi[0], hi[0]
    for step in range(_PROBES_MAX):
        if hi[0] - lo[0] <= WINDOW:
            break
        seen = await asyncio.gather(*(_source_of(bus, {"seq": at}) for at in probes(lo, hi, target, step)))
        lo = max([lo, *(s for s in seen if s[1] < target)])
        hi = min([hi, *(s for s in seen if s[1] >= target)])
    return lo[0], hi[0]


async def _source_of(bus: Bus, request: dict[str, object]) -> tuple[int, int]:
    """(sequence, RR_EVENTS sequence) of the RR_CONTEXT record a direct get `request` names."""
    try:
        msg = await bus.nc.request(f"$JS.API.DIRECT.GET.{CONTEXT_STREAM}", msgspec.json.encode(request),
                                   timeout=bus.api_timeout_s)
    except nats.errors.NoRespondersError:
        raise _Gone(request) from None  # no such stream
    except nats.errors.TimeoutError as exc:
        raise BusUnavailable(f"JetStream did not answer a direct get on {CONTEXT_STREAM}: {exc or type(exc).__name__}") from None
    source = source_seq(msg.headers)
    if source is None:  # a 404: empty, or aged out since
        raise _Gone(request)
    return int((msg.headers or {})["Nats-Sequence"]), source
