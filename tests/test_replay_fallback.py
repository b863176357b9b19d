"""A point in time whose newest kept snapshot is unreadable starts from the one before it, from the same listing of the bucket."""

from __future__ import annotations

import datetime as dt
from typing import Any

from eventbus.events import utcnow
from eventbus.history import last_sequence
from eventbus.publisher import Publisher
from eventbus.snapshots import kept_name, save_snapshot
from projections import bundle
from servicekit.rebuild import state_at_seq, state_at_time
from servicekit.snapshotting import save_state
from tests.bus_harness import provisioned_bus
from tests.test_forensics import _incident


async def _kept_bundle_at(bus: Any, *seqs: int) -> None:
    for seq in seqs:
        await save_state(bus, bundle.PROJECTION, (await state_at_seq(bus, bundle.PROJECTION, seq, use_snapshot=False)).state)


async def test_an_unreadable_newest_snapshot_is_skipped_for_the_older_one_and_the_point_equals_a_fold_from_scratch(nats_url: str) -> None:
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
