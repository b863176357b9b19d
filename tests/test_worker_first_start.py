"""A worker's first start reads its fence from RR_CONTEXT and knows what a full read of RR_EVENTS knows; after retention
trimmed the log's head, a restarted worker keeps the fence it had (issue 19).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.js.kv import KeyValue

from eventbus.connection import Bus
from eventbus.events import Event, LeaderElected, LeaderLost, WorkAssigned
from eventbus.history import Record, last_on, last_sequence, replay
from eventbus.leasecopy import copy_subject, is_copy, origin_of
from eventbus.leaserecord import LeaseValue, encode_value
from eventbus.leases import DEFAULT_BUCKET
from eventbus.publisher import Publisher
from eventbus.streams import CONTEXT_STREAM, EVENTS_STREAM, StreamSettings, provision
from ops.bench.bench_projection import fleet_log
from projections.fencing import EpochFence, FenceView
from services.worker import contextprime, fencefeed
from services.worker.contextprime import FENCE_SUBJECTS
from services.worker.fencefeed import FenceFeed, PositionedFence
from tests.bus_harness import provisioned_bus
from tests.helpers import eventually

CANDIDATES = ("c-1", "c-2")
NAMES = ("assignments", "cancels")
ACQUIRED_AT = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


async def _full_read(bus: Bus) -> FenceView:
    """The fence a fold of every election and lease copy RR_EVENTS holds gives, read by one consumer from its head."""
    fenced = PositionedFence(EpochFence(CANDIDATES), 0)
    await replay(bus, fenced.learn, subjects=FENCE_SUBJECTS)
    return fenced.fence.view()


async def _primed(bus: Bus, saved_at: Path | None = None) -> FenceFeed:
    feed = FenceFeed(bus, NAMES, saved_at=saved_at)
    await feed.prime(CANDIDATES)
    return feed


async def _in_log(bus: Bus, role: str, revision: int) -> bool:
    copied = await last_on(bus, copy_subject(role))
    origin = origin_of(copied.headers) if copied is not None else None
    return origin is not None and origin.revision >= revision


async def _acquire(kv: KeyValue, bus: Bus, role: str, renewals: int = 2) -> int:
    """A term of `bus`'s node: its acquiring write copied into the log, its election, then its renewals; the epoch."""
    value = LeaseValue(node=bus.node_id, incarnation=f"{bus.node_id}-{role}", ttl_s=3, acquired_at=ACQUIRED_AT)
    epoch = await kv.put(role, encode_value(value))
    await eventually(lambda: _in_log(bus, role, epoch), timeout=10, message=f"the copy of {role}'s acquisition")
    await Publisher(bus).publish(LeaderElected(role=role, node=bus.node_id, ttl_s=3.0, epoch=epoch))
    for _ in range(renewals):
        await kv.put(role, encode_value(msgspec.structs.replace(value, epoch=epoch)))
    return epoch


async def _filler(bus: Bus, events: Iterator[Event], count: int) -> None:
    await Publisher(bus).publish_many(list(itertools.islice(events, count)))


async def _context_caught_up(bus: Bus) -> None:
    """Wait until RR_CONTEXT has copied every record RR_EVENTS holds now."""
    async def lag() -> bool:
        info = await bus.js.stream_info(CONTEXT_STREAM)
        sources = info.sources or []
        return bool(sources) and sources[0].lag == 0 and info.state.messages > 0
    await eventually(lag, timeout=30, message="RR_CONTEXT copied the log's context")


async def _stop_copying(bus: Bus, keep_msgs: int = -1) -> None:
    """RR_CONTEXT stops copying (as when its source lags) and, with `keep_msgs`, drops its oldest copies."""
    info = await bus.js.stream_info(CONTEXT_STREAM)
    info.config.sources, info.config.max_msgs = None, keep_msgs
    await bus.js.update_stream(info.config)


async def _trim_log(bus: Bus, keep_msgs: int) -> None:
    """Retention trims RR_EVENTS' head: it keeps its newest `keep_msgs` records."""
    info = await bus.js.stream_info(EVENTS_STREAM)
    info.config.max_msgs = keep_msgs
    await bus.js.update_stream(info.config)
    assert (await bus.js.stream_info(EVENTS_STREAM)).state.messages <= keep_msgs


async def _year_in_small(one: Bus, two: Bus, kv: KeyValue) -> None:
    """Several roles' terms with their lease copies and renewals, a loss, unbelieved elections, among a fleet's records."""
    events = fleet_log(100_000)
    await _filler(one, events, 300)
    first = await _acquire(kv, one, "scheduler")
    await _filler(one, events, 300)
    await _acquire(kv, two, "registry", renewals=0)
    await Publisher(one).publish(LeaderLost(role="scheduler", node="c-1", epoch=first, reason="resigned"))
    await _filler(one, events, 300)
    await _acquire(kv, two, "scheduler", renewals=3)
    await Publisher(one).publish(LeaderElected(role="scheduler", node="c-1", ttl_s=3.0, epoch=first + 1_000))  # made up
    await _filler(one, events, 300)


async def test_a_first_start_reads_the_fence_from_the_context_stream_and_knows_what_the_full_read_knows(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched: list[Record] = []
    original = contextprime._original

    async def counted(bus: Bus, copy: Record) -> Record | None:
        fetched.append(copy)
        return await original(bus, copy)

    monkeypatch.setattr(contextprime, "_original", counted)
    async with provisioned_bus(nats_url, node_id="c-1") as one, provisioned_bus(nats_url, node_id="c-2") as two:
        kv = await one.js.key_value(DEFAULT_BUCKET)
        await _year_in_small(one, two, kv)
        await _context_caught_up(one)
        copied_to = await last_sequence(one)
        # Records RR_CONTEXT has not copied yet: another term of the registry, renewals, more of the fleet.
        await _stop_copying(one)
        await _acquire(kv, one, "registry")
        await _filler(one, fleet_log(1_000), 200)

        first = await _primed(one)
        full = await _full_read(one)
        assert first.primed_by == "context" and first.primed_from == 1
        for name in NAMES:
            assert first.fence(name).view() == full
        assert full.verified and set(full.newest) == {"scheduler", "registry"} and len(full.role_of) >= 4
        # Read again from RR_EVENTS: the terms' acquisitions, and the first and last record (the check that the
        # copies are this log's); none of the renewals in between.
        acquisitions = {r.seq for r in fetched if is_copy(r.subject) and contextprime.may_acquire(r.data)}
        assert len(acquisitions) == 3 and len(fetched) <= 5 and all(r.seq <= copied_to for r in fetched)


async def test_without_all_of_the_range_in_the_context_stream_a_first_start_reads_the_log(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="c-1") as one, provisioned_bus(nats_url, node_id="c-2") as two:
        kv = await one.js.key_value(DEFAULT_BUCKET)
        await _year_in_small(one, two, kv)
        await _context_caught_up(one)
        assert (await _primed(one)).primed_by == "context"
        # It dropped its oldest copies (its bytes bound): the log's head is no longer in it.
        copies = (await one.js.stream_info(CONTEXT_STREAM)).state.messages
        await _stop_copying(one, keep_msgs=copies // 2)
        dropped = await _primed(one)
        assert dropped.primed_by == "log" and dropped.fence("cancels").view() == await _full_read(one)
        # A log provisioned before RR_CONTEXT existed.
        await one.js.delete_stream(CONTEXT_STREAM)
        absent = await _primed(one)
        assert absent.primed_by == "log" and absent.fence("cancels").view() == await _full_read(one)


async def test_copies_of_another_log_make_the_first_start_read_the_log(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="c-1") as one, provisioned_bus(nats_url, node_id="c-2") as two:
        kv = await one.js.key_value(DEFAULT_BUCKET)
        events = fleet_log(5_000)
        for epoch in (3, 8):  # elections of a log without lease copies: no copy is read again from RR_EVENTS
            await _filler(one, events, 300)
            await Publisher(one).publish(LeaderElected(role="scheduler", node="c-1", ttl_s=3.0, epoch=epoch))
        await _context_caught_up(one)
        # RR_EVENTS made again under RR_CONTEXT, which keeps the old log's copies under the same sequences.
        await one.js.delete_stream(EVENTS_STREAM)
        await provision(one.js, StreamSettings())
        await _filler(one, events, 1_500)
        await _acquire(kv, two, "registry")
        remade = await _primed(one)
        assert remade.primed_by == "log" and remade.fence("cancels").view() == await _full_read(one)


async def test_a_forged_first_lease_copy_makes_the_first_start_read_the_log(nats_url: str) -> None:
    # Without credentials anyone may publish on the copies' subjects: the first copy then verifies nothing, and
    # a renewal's copy after it, passed over in RR_CONTEXT, would have.
    async with provisioned_bus(nats_url, node_id="c-1") as bus:
        kv = await bus.js.key_value(DEFAULT_BUCKET)
        renewal = LeaseValue(node="c-1", incarnation="i", epoch=3, ttl_s=3, acquired_at=ACQUIRED_AT)
        await bus.js.publish(copy_subject("scheduler"), encode_value(renewal))
        revision = await kv.put("scheduler", encode_value(renewal))
        await eventually(lambda: _in_log(bus, "scheduler", revision), timeout=10, message="the renewal's copy")
        # No acquisition at that revision: a fence verified by the renewal's copy does not believe it.
        await Publisher(bus).publish(LeaderElected(role="scheduler", node="c-1", ttl_s=3.0, epoch=revision))
        await _acquire(kv, bus, "registry")
        await _context_caught_up(bus)
        primed, full = await _primed(bus), await _full_read(bus)
        assert primed.primed_by == "log" and primed.fence("cancels").view() == full
        assert full.verified and "scheduler" not in full.newest


async def test_a_worker_started_after_retention_trimmed_the_elections_off_the_log_keeps_its_fence(
        nats_url: str, tmp_path: Path) -> None:
    saved_at = tmp_path / "fence.json"
    async with provisioned_bus(nats_url, node_id="c-1") as one, provisioned_bus(nats_url, node_id="c-2") as two:
        kv = await one.js.key_value(DEFAULT_BUCKET)
        await _year_in_small(one, two, kv)
        deposed = min(e for e, role in (await _full_read(one)).role_of.items() if role == "scheduler")
        running = await _primed(one, saved_at)
        before = running.fence("cancels").view()
        events = fleet_log(3_000)
        await _filler(one, events, 500)
        await running.save()  # the worker saves as it runs and when it stops
        await _filler(one, events, 100)

        await _trim_log(one, 400)  # every election and lease copy aged out; the last save's position is kept
        assert (await _full_read(one)).role_of == {}
        restarted = await _primed(one, saved_at)
        assert restarted.primed_by == "saved"
        for name in NAMES:
            assert restarted.fence(name).view() == before
        end = await last_sequence(one)
        stale = WorkAssigned(work_id="w-1", node="gpu-1", attempt=1, deadline=ACQUIRED_AT, epoch=deposed)
        assert not await restarted.admit("assignments", stale, end + 1)  # a deposed term's decision, still dropped

        # A first start (no saved fence) folds what the log still holds, as a full read of it does.
        await _context_caught_up(one)
        fresh = await _primed(one)
        assert fresh.primed_by == "context" and fresh.fence("cancels").view() == await _full_read(one)

        # A saved fence whose position aged out too cannot be known to be this log's: the log's fold.
        await _filler(one, events, 500)
        await _trim_log(one, 100)
        again = await _primed(one, saved_at)
        assert again.primed_by != "saved" and again.fence("cancels").view() == await _full_read(one)


async def test_the_save_after_a_first_start_reads_nothing_the_priming_read_covered(
        nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The newest election can be months before the log's end: the save right after priming must not read from it again.
    async with provisioned_bus(nats_url, node_id="c-1") as bus:
        await Publisher(bus).publish(LeaderElected(role="scheduler", node="c-1", ttl_s=3.0, epoch=3))
        await _filler(bus, fleet_log(2_000), 1_000)
        feed = await _primed(bus, tmp_path / "fence.json")
        end = await last_sequence(bus)
        reads: list[int] = []
        real_replay = replay

        async def counted(*args: object, **kwargs: Any) -> int:
            reads.append(kwargs["start_seq"])
            return await real_replay(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(fencefeed, "replay", counted)
        await feed.save()
        assert reads == [end + 1]
        assert (await _primed(bus, tmp_path / "fence.json")).primed_from == end + 1
