"""Lease keys on a real nats-server: compare-and-set acquire and renew, per-key TTL kept on renewal, expiry, release, watch."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventbus.connection import Bus, connect
from eventbus.errors import ConcurrencyConflict
from eventbus.leases import LeaseBucket, LeaseRecord, LeaseValue

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await connect(nats_url, node_id="test")
    try:
        yield connected
    finally:
        await connected.close()


@pytest.fixture
async def bucket(bus: Bus) -> LeaseBucket:
    leases = LeaseBucket(bus, "t_leases")
    await leases.ensure()
    return leases


def value(node: str = "a", epoch: int = 0, ttl_s: int = 1) -> LeaseValue:
    return LeaseValue(node=node, incarnation=f"{node}-1", epoch=epoch, ttl_s=ttl_s, acquired_at=T0)


async def test_ensure_is_idempotent_even_when_raced(bus: Bus) -> None:
    leases = LeaseBucket(bus, "raced")
    assert not await leases.exists()
    await asyncio.gather(*(LeaseBucket(bus, "raced").ensure() for _ in range(3)))
    await leases.ensure()
    assert await leases.exists()


async def test_only_one_of_two_acquires_of_a_free_key_wins(bucket: LeaseBucket) -> None:
    assert (await bucket.read("scheduler")).state == "absent"
    revision = await bucket.acquire("scheduler", value("a"), expect_revision=0, timeout=2)
    with pytest.raises(ConcurrencyConflict):
        await bucket.acquire("scheduler", value("b"), expect_revision=0, timeout=2)
    record = await bucket.read("scheduler")
    assert record.holder is not None and record.holder.node == "a"
    assert record.revision == revision == record.epoch
    assert await bucket.roles() == ["scheduler"]


async def test_a_renewal_keeps_a_ttl_and_extends_it(bucket: LeaseBucket, eventually: Any) -> None:
    epoch = await bucket.acquire("scheduler", value(ttl_s=1), expect_revision=0, timeout=2)
    await asyncio.sleep(0.6)  # part of the TTL must pass for the extension to show
    renewed_at = time.monotonic()
    revision = await bucket.renew("scheduler", value(epoch=epoch, ttl_s=1), revision=epoch, timeout=2)
    assert revision > epoch
    record = await bucket.read("scheduler")
    assert record.epoch == epoch and record.revision == revision  # the epoch survives renewals

    # The renewal itself carries the TTL (a plain KV update would drop it and the key would never expire).
    expired = await eventually(lambda: _expired(bucket), timeout=5, message="renewed lease expires")
    assert time.monotonic() - renewed_at >= 1.0  # not before a full TTL after the renewal
    assert expired.revision > revision


async def _expired(bucket: LeaseBucket) -> LeaseRecord | None:
    record = await bucket.read("scheduler")
    return record if record.free else None


async def test_an_expired_lease_is_acquired_over_its_marker_then_over_nothing(bucket: LeaseBucket, eventually: Any) -> None:
    await bucket.acquire("scheduler", value("a"), expect_revision=0, timeout=2)
    marker = await eventually(lambda: _expired(bucket), timeout=5, message="lease expires")
    assert marker.state == "expired"
    with pytest.raises(ConcurrencyConflict):  # create-if-absent fails while the marker lives
        await bucket.acquire("scheduler", value("b"), expect_revision=0, timeout=2)
    epoch = await bucket.acquire("scheduler", value("b"), expect_revision=marker.revision, timeout=2)
    assert epoch > marker.revision


async def test_a_stale_holder_cannot_renew_or_release_a_lease_taken_by_another(bucket: LeaseBucket) -> None:
    old = await bucket.acquire("scheduler", value("a"), expect_revision=0, timeout=2)
    await bucket.release("scheduler", revision=old)
    freed = await bucket.read("scheduler")
    assert freed.state == "deleted"
    new = await bucket.acquire("scheduler", value("b"), expect_revision=freed.revision, timeout=2)
    with pytest.raises(ConcurrencyConflict):
        await bucket.renew("scheduler", value("a", epoch=old), revision=old, timeout=2)
    with pytest.raises(ConcurrencyConflict):
        await bucket.release("scheduler", revision=old)
    record = await bucket.read("scheduler")
    assert record.holder is not None and record.holder.node == "b" and record.epoch == new


async def test_a_watch_sees_acquisition_renewal_release_and_expiry_in_order(bucket: LeaseBucket, eventually: Any) -> None:
    seen: list[LeaseRecord] = []
    epoch = await bucket.acquire("scheduler", value("a"), expect_revision=0, timeout=2)
    watcher = asyncio.ensure_future(bucket.watch("scheduler", seen.append))
    try:
        await eventually(lambda: seen, timeout=5, message="the watch starts with the current record")
        revision = await bucket.renew("scheduler", value("a", epoch=epoch), revision=epoch, timeout=2)
        await bucket.release("scheduler", revision=revision)
        freed = await bucket.read("scheduler")
        await bucket.acquire("scheduler", value("b"), expect_revision=freed.revision, timeout=2)
        await eventually(lambda: seen and seen[-1].state == "expired", timeout=5, message="expiry reaches the watch")
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    states = [(r.state, r.holder.node if r.holder else None) for r in seen]
    # A watch promises the latest record in revision order; when its ordered consumer is reset
    # (a missed heartbeat on a loaded machine) a renewal of an unchanged holder may be coalesced.
    distinct = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert distinct == [("held", "a"), ("deleted", None), ("held", "b"), ("expired", None)]
    assert len(states) <= 5
    assert [r.revision for r in seen] == sorted(r.revision for r in seen)
