"""A worker's first fence read from RR_CONTEXT, the server's copies of the elections and lease copies, not from RR_EVENTS.

The elections and lease copies a fence learns from are a few thousand records spread over a
year's log: a consumer on RR_EVENTS reading them from sequence 1 makes the server load every
message block (52-73 s at 22M records, ops/bench/README.md). RR_CONTEXT holds the server's copies
of them and of the membership records alone, in RR_EVENTS' order, each naming its RR_EVENTS
sequence (eventbus/contextread.py), so a consumer a filter on that small stream gives the same
records under the same sequences (1.4-4.1 s at 22M).

A lease copy's own source header (the KV revision the fence verifies against) is replaced by
RR_CONTEXT's, so a copy that can change the fence is read again from RR_EVENTS by its sequence
(a direct get): every copy whose lease value is an acquisition's (epoch 0: one a term), and the
first copy (it makes the fence verified). The others, a term's renewals and its release, change
nothing in a fence that is verified already (`projections.fencing.copied`), so they are passed
over: the fold only records their position. Should the fold meet such a copy while not verified
(the copy fetched before it was no server's copy: a forgery on a server without credentials), it
cannot be the full read's fold: `read` then answers None, as it does when RR_CONTEXT does not
exist, is empty, has dropped copies of the range, or holds copies of another log (its first or
last copy in the range, or a copy read again, is not what RR_EVENTS holds at that sequence:
RR_EVENTS was made again under it); the caller reads RR_EVENTS instead.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

import msgspec

from eventbus import contextread, directreads
from eventbus.connection import Bus
from eventbus.errors import BusError, BusUnavailable
from eventbus.history import Record, replay
from eventbus.leasecopy import COPIES, is_copy
from eventbus.leaserecord import record_from
from eventbus.streams import CONTEXT_STREAM
from eventbus.subjects import EVENTS_ROOT

LEADER_EVENTS = f"{EVENTS_ROOT}.leader.>"
FENCE_SUBJECTS = (LEADER_EVENTS, COPIES)  # few subjects (elections and lease copies): one consumer reads both cheaply
FETCHED_AT_ONCE = 256  # originals of lease copies asked at once: one round trip's worth, not a flood of requests


class Step(msgspec.Struct, frozen=True):
    """One record of the fold, as RR_EVENTS holds it; `learn` False: a lease copy that changes no verified fence."""

    record: Record
    learn: bool


class Copied(msgspec.Struct, frozen=True):
    """The fence's records RR_CONTEXT holds of a range, in log order, and the RR_EVENTS sequence it has copied up to."""

    steps: list[Step]
    through: int


def may_acquire(data: bytes) -> bool:
    """Whether a lease copy's body can be a term's acquiring write (a lease value of epoch 0); its headers can only say no."""
    holder = record_from("", 0, None, data, None).holder
    return holder is not None and holder.epoch == 0


class _Collector:
    """Turns RR_CONTEXT's records into the fold's steps, keeping one record of each run of passed copies."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.steps: list[Step] = []
        self.copies_kept = 0

    def __call__(self, copy: Record) -> None:
        seq = contextread.source_seq(copy.headers)
        if seq is None or not self.start <= seq <= self.end:
            return
        record = Record(seq, copy.subject, copy.data, contextread.own_headers(copy.headers))
        if is_copy(copy.subject) and self.copies_kept and not may_acquire(copy.data):
            # Only the last of a run counts (the fold's position and anchor): memory stays the elections' size.
            if self.steps and not self.steps[-1].learn:
                self.steps[-1] = Step(record, False)
            else:
                self.steps.append(Step(record, False))
            return
        self.copies_kept += is_copy(copy.subject)
        self.steps.append(Step(record, True))


async def read(bus: Bus, start: int, end: int) -> Copied | None:
    """The fence's records of RR_EVENTS `start`..`end` that RR_CONTEXT holds; None when it cannot give every one of them."""
    copies = await contextread.ends(bus)
    if copies is None or contextread.lacks_before(copies[0], start):
        return None
    (first, _), (last, copied_to) = copies
    # One consumer a filter, merged by sequence: a consumer of both filters delivered the same records
    # at a fifth of the rate (ops/bench/README.md, "A worker's first start from RR_CONTEXT"). Within
    # the copies alone a run of passed copies is still one run: only copies start or end one.
    collected = [_Collector(start, end) for _ in FENCE_SUBJECTS]
    await asyncio.gather(*(replay(bus, collect, stream=CONTEXT_STREAM, subject=subject, start_seq=first, end_seq=last)
                           for collect, subject in zip(collected, FENCE_SUBJECTS, strict=True)))
    merged = list(heapq.merge(*(c.steps for c in collected), key=lambda step: step.record.seq))
    if merged and not all(await asyncio.gather(*(_in_log(bus, merged[i].record) for i in (0, -1)))):
        return None  # copies of another log (RR_EVENTS made again under it)
    steps = await _with_originals(bus, merged)
    return None if steps is None else Copied(steps, max(start - 1, min(end, copied_to)))


async def _in_log(bus: Bus, copy: Record) -> bool:
    """Whether RR_EVENTS holds the same record at the copy's sequence."""
    return (await _original(bus, copy)) is not None


async def _with_originals(bus: Bus, steps: list[Step]) -> list[Step] | None:
    """The steps with each lease copy to learn as RR_EVENTS holds it (its KV source header); None when one is gone."""
    wanted = [i for i, step in enumerate(steps) if step.learn and is_copy(step.record.subject)]
    out = list(steps)
    for at in range(0, len(wanted), FETCHED_AT_ONCE):
        chunk = wanted[at:at + FETCHED_AT_ONCE]
        originals = await asyncio.gather(*(_original(bus, steps[i].record) for i in chunk))
        for i, original in zip(chunk, originals, strict=True):
            if original is None:
                return None
            out[i] = Step(original, True)
    return out


async def _original(bus: Bus, copy: Record) -> Record | None:
    """The record RR_EVENTS holds at the copy's sequence, when it is the copy's (same subject and body)."""
    try:
        page = await directreads.read_aggregate(bus, copy.subject, copy.seq, copy.seq, batch=1)
    except BusUnavailable:
        raise
    except BusError:  # a stream refusing direct gets: the full read instead
        return None
    return next((r for r in page if r.seq == copy.seq and r.data == copy.data), None)


def fold(copied: Copied, learn: Callable[[Record], None], passed: Callable[[Record], None],
         verified: Callable[[], bool]) -> bool:
    """Fold the steps; False when a passed copy met a fence not verified yet (it is not the full read's fold then)."""
    for step in copied.steps:
        if step.learn:
            learn(step.record)
        elif not verified():
            return False
        else:
            passed(step.record)
    return True
