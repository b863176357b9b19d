"""A point in time reads the log after its snapshot while the snapshot loads, and drops that read when it starts elsewhere."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from eventbus.events import utcnow
from eventbus.history import Record, last_sequence
from eventbus.publisher import Publisher
from eventbus.snapshots import kept_name, save_snapshot
from projections import bundle
from servicekit import rebuild
from servicekit.rebuild import _Tail, state_at_seq, state_at_time
from servicekit.snapshotting import save_state
from tests.bus_harness import provisioned_bus
from tests.test_forensics import _incident


def _record(seq: int) -> Record:
    return Record(seq, f"rr.evt.host.gpu-{seq}.HOST_ONLINE.gpu-{seq}", b"{}", None)


def test_the_tail_holds_records_until_the_fold_is_ready_then_hands_them_over_in_order() -> None:
    tail, folded = _Tail(), []
    for seq in (4, 5):
        tail(_record(seq))
    assert not folded and [r.seq for r in tail.held] == [4, 5]
    tail.attach(lambda record: folded.append(record.seq))
    tail(_record(6))
    assert folded == [4, 5, 6] and tail.handed == 3 and tail.last_seq == 6 and not tail.held


def test_a_full_hold_stops_the_read_until_the_fold_is_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Tail, "HELD", 2)
    tail = _Tail()
    tail(_record(1))
    assert not tail.full()
    tail(_record(2))
    assert tail.full()
    tail.attach(lambda record: None)
    assert not tail.full()  # once folding, the read goes on


async def _kept_bundle_at(bus: Any, *seqs: int) -> None:
    for seq in seqs:
        await save_state(bus, bundle.PROJECTION, (await state_at_seq(bus, bundle.PROJECTION, seq, use_snapshot=False)).state)


async def test_the_records_after_the_snapshot_arrive_while_it_loads_and_the_point_equals_a_fold_from_scratch(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        end = await last_sequence(bus)
        await _kept_bundle_at(bus, 3)
        arrived = asyncio.Event()
        real_replay, real_load = rebuild.replay, rebuild.load_state

        async def replay(bus: Any, on_record: Callable[[Record], object], **kwargs: Any) -> int:
            def seen(record: Record) -> object:
                arrived.set()
                return on_record(record)
            return await real_replay(bus, seen, **kwargs)

        async def load_state(*args: Any, **kwargs: Any) -> Any:
            await asyncio.wait_for(arrived.wait(), 20)  # before this change the tail was read only after the load
            return await real_load(*args, **kwargs)

        monkeypatch.setattr(rebuild, "replay", replay)
        monkeypatch.setattr(rebuild, "load_state", load_state)
        point = await state_at_seq(bus, bundle.PROJECTION, end)
        assert point.snapshot_seq == 3 and point.folded == end - 3
        monkeypatch.undo()
        assert point.state == (await state_at_seq(bus, bundle.PROJECTION, end, use_snapshot=False)).state


async def test_an_unreadable_newest_snapshot_drops_the_read_ahead_and_the_fold_starts_from_the_older_one(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        end = await last_sequence(bus)
        await _kept_bundle_at(bus, 3, 8)
        await save_snapshot(bus, kept_name(bundle.PROJECTION.name, bundle.PROJECTION.version, 8), b"not a snapshot")
        scratch = (await state_at_seq(bus, bundle.PROJECTION, end, use_snapshot=False)).state
        point = await state_at_seq(bus, bundle.PROJECTION, end)
        assert point.snapshot_seq == 3 and point.folded == end - 3 and point.state == scratch
        at = await state_at_time(bus, utcnow(), skew=dt.timedelta(0))  # the incident's times are its own, long past
        assert at.snapshot_seq == 3 and at.state == scratch
