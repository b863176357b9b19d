"""A service that loads the lineage while a quarantine is in force decodes it at the load, in a thread, not at its
first closure on the event loop; without a quarantine the lineage stays as the snapshot left it."""

from __future__ import annotations

import msgspec

from eventbus import events as ev
from eventbus.publisher import Publisher
from projections import taint
from projections.base import Folder
from servicekit.livefold import LiveFold, taint_subjects
from servicekit.rebuild import state_at_seq, store
from tests.bus_harness import provisioned_bus
from tests.test_projections import T0


def _batches(count: int) -> list[ev.Event]:
    return [ev.SelfplayComplete(batch_id=f"b-{i}", work_id=f"w-{i}", node="gpu-1", board_type="hex8", num_players=2,
                                num_games=5, ts=T0) for i in range(count)]


QUARANTINE = ev.OutputsQuarantined(quarantine_id="q-1", kind="node", target="gpu-1", reason="bad disk", since=T0)


def _still_msgpack(state: taint.TaintState) -> int:
    return sum(type(value) is msgspec.Raw for value in state.batches.buckets.stored().values())


async def _started(nats_url: str, log: list[ev.Event]) -> taint.TaintState:
    """The taint fold of a service started from a snapshot of `log`."""
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(log)
        await store(bus, taint.PROJECTION, (await state_at_seq(bus, taint.PROJECTION, use_snapshot=False)).state)
        service = Folder(taint.PROJECTION)
        live = LiveFold(bus, [service], taint_subjects())
        await live.catch_up()
        assert live.snapshot_seq == len(log)
        return service.state


async def test_a_service_started_while_a_quarantine_is_in_force_holds_its_lineage_decoded(nats_url: str) -> None:
    state = await _started(nats_url, [*_batches(40), QUARANTINE])
    assert taint.in_force(state) and len(state.batches) == 40 and _still_msgpack(state) == 0
    assert len(taint.tainted(state).batches) == 40


async def test_without_a_quarantine_the_lineage_stays_as_the_snapshot_left_it(nats_url: str) -> None:
    state = await _started(nats_url, _batches(40))
    assert not taint.in_force(state) and _still_msgpack(state) == len(state.batches.buckets) == 40  # their ids hash to 40 buckets
