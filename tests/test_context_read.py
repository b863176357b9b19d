"""A work item's context read from RR_CONTEXT: the records RR_EVENTS holds for the range, whatever RR_CONTEXT lacks."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from cli.commands.timeline import _read_range
from eventbus import contextread
from eventbus.connection import Bus
from eventbus.history import Record, last_sequence, replay
from eventbus.leases import DEFAULT_BUCKET
from eventbus.publisher import Publisher
from eventbus.streams import CONTEXT_STREAM, CONTEXT_SUBJECTS, EVENTS_STREAM
from eventbus.subjects import aggregate_filter
from ops.bench.bench_projection import NODES, fleet_log
from projections.timeline import LEADERSHIP
from tests.bus_harness import provisioned_bus
from tests.helpers import eventually


def test_a_copys_source_header_names_its_sequence_in_the_log_and_nothing_else_does() -> None:
    header = "RR_EVENTS 1234 rr.evt.leader.>\x0crr.evt.lease.> rr.evt.leader.>\x0crr.evt.lease.> rr.evt.leader.x.T.n o4XcG3pm"
    assert contextread.source_seq({"Nats-Stream-Source": header}) == 1234
    assert contextread.source_seq({"Nats-Stream-Source": "KV_rr_leases 7 $KV.rr_leases.* x $KV.rr_leases.a id"}) is None
    assert contextread.source_seq({"Nats-Stream-Source": "RR_EVENTS x12"}) is None
    assert contextread.source_seq(None) is None
    assert contextread.own_headers({"Nats-Stream-Source": header, "Nats-Msg-Id": "m"}) is None
    assert contextread.own_headers({"Nats-Stream-Source": header, "traceparent": "t"}) == {"traceparent": "t"}


def test_the_context_stream_covers_leadership_lease_copies_and_membership_only() -> None:
    assert contextread.covers((*LEADERSHIP, aggregate_filter("host", "gpu-1")))
    assert contextread.covers(CONTEXT_SUBJECTS)
    assert not contextread.covers((*LEADERSHIP, aggregate_filter("work", "w-1")))
    assert not contextread.covers(())


def test_probes_land_strictly_inside_their_bracket_and_every_other_step_halves_it() -> None:
    rng = random.Random(7)
    for step in range(2_000):
        low, high = sorted(rng.sample(range(1, 10_000), 2))
        if high - low < 2:
            continue
        low_src, high_src = sorted(rng.sample(range(1, 1_000_000), 2))
        ats = contextread.probes((low, low_src), (high, high_src), rng.randrange(low_src, high_src + 1), step)
        assert ats and all(low < at < high for at in ats)
        assert not step % 2 or (low + high) // 2 in ats


async def _log_with_context(bus: Bus, records: int) -> int:
    """A fleet's log with lease copies among it, once RR_CONTEXT holds the copy of each of its context records."""
    kv = await bus.js.key_value(DEFAULT_BUCKET)
    events = list(fleet_log(records))
    for start in range(0, len(events), 500):
        await Publisher(bus).publish_many(events[start:start + 500])
        await kv.put("scheduler", f"lease {start}".encode())  # the server copies it into RR_EVENTS, then RR_CONTEXT
    end = await last_sequence(bus)
    wanted = sum([await _count(bus, EVENTS_STREAM, subject, end) for subject in CONTEXT_SUBJECTS])
    await eventually(lambda: _copied(bus, wanted), timeout=30, message="RR_CONTEXT copied the log's context")
    return end


async def _count(bus: Bus, stream: str, subject: str, end: int) -> int:
    return await replay(bus, lambda _: None, stream=stream, subject=subject, end_seq=end)


async def _copied(bus: Bus, wanted: int) -> bool:
    return (await bus.js.stream_info(CONTEXT_STREAM)).state.messages >= wanted


class _Counted:
    """The RR_EVENTS read `contextread.read` falls back to, counting the ranges it was asked."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.ranges: list[tuple[int, int]] = []

    async def __call__(self, filters: Sequence[str], start: int, end: int) -> tuple[dict[int, Record], int]:
        self.ranges.append((start, end))
        return await _read_range(self.bus, filters, start, end)


def _ranges(rng: random.Random, end: int, count: int, marks: Sequence[int] = ()) -> list[tuple[tuple[str, ...], int, int]]:
    """Random ranges of the log; with `marks` (context records' sequences), every other one starts and ends on one."""
    out = []
    for i in range(count):
        start = rng.randrange(1, end)
        stop = min(end, start + rng.choice((0, 50, 700, 3_000, end)))
        if marks and i % 2:
            start, stop = sorted(rng.sample(list(marks), 2))
        nodes = rng.sample(NODES, rng.randrange(0, 3))
        out.append(((*LEADERSHIP, *(aggregate_filter("host", n) for n in nodes)), start, stop))
    return out


async def test_the_context_of_any_range_read_from_the_context_stream_is_what_the_log_holds_for_it(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with provisioned_bus(nats_url) as bus:
        end = await _log_with_context(bus, 6_000)
        fallback = _Counted(bus)
        marks = sorted((await _read_range(bus, LEADERSHIP, 1, end))[0])
        for window in (contextread.WINDOW, 1):  # 1: the interpolation narrows each end to the record
            monkeypatch.setattr(contextread, "WINDOW", window)
            for filters, start, stop in _ranges(random.Random(window), end, 30, marks):
                expected = (await _read_range(bus, filters, start, stop))[0]
                found = (await contextread.read(bus, filters, start, stop, fallback))[0]
                assert found == expected, (filters, start, stop)
                assert any(r.subject.startswith("rr.evt.lease.") for r in found.values()) or stop - start < 3_000
                assert start not in marks or start in found, "a range starting on a copy holds it"
        # Only the ranges past RR_CONTEXT's last copy asked RR_EVENTS for that tail.
        last_copy = max((await _read_range(bus, CONTEXT_SUBJECTS, 1, end))[0])
        assert all(first > last_copy for first, _ in fallback.ranges), fallback.ranges


async def test_what_the_context_stream_lacks_is_read_from_the_log(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        end = await _log_with_context(bus, 3_000)
        info = await bus.js.stream_info(CONTEXT_STREAM)
        # It stops copying (as when sourcing lags) and has dropped its oldest copies.
        info.config.sources, info.config.max_msgs = None, info.state.messages // 2
        await bus.js.update_stream(info.config)
        await Publisher(bus).publish_many(list(fleet_log(3_000))[-1_000:])
        later = await last_sequence(bus)
        fallback = _Counted(bus)
        for filters, start, stop in [*_ranges(random.Random(3), later, 20), (LEADERSHIP, 1, later)]:
            expected = (await _read_range(bus, filters, start, stop))[0]
            assert (await contextread.read(bus, filters, start, stop, fallback))[0] == expected, (filters, start, stop)
        assert any(stop == later and first > end for first, stop in fallback.ranges), "the tail not copied yet"
        assert any(first == 1 for first, _ in fallback.ranges), "the head it no longer keeps"
        # Without the stream (a log provisioned before it), the whole range comes from the log.
        await bus.js.delete_stream(CONTEXT_STREAM)
        fallback.ranges.clear()
        expected = (await _read_range(bus, LEADERSHIP, 100, later))[0]
        assert (await contextread.read(bus, LEADERSHIP, 100, later, fallback))[0] == expected
        assert fallback.ranges == [(100, later)]
