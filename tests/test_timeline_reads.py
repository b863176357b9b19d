"""How `rr timeline --work` reads: one listing of the snapshot bucket, the index's tail in one read, the same lines either way."""

from __future__ import annotations

import msgspec
import pytest

import eventbus.snapshots
import servicekit.keptlisting
import servicekit.snapshotting
from cli.commands import timeline as timeline_cmd
from cli.commands.timeline import read_timeline
from eventbus import events as ev
from eventbus.connection import Bus
from eventbus.events import encode
from eventbus.history import last_sequence, replay
from eventbus.publisher import Publisher
from eventbus.snapshots import kept_name, save_snapshot
from eventbus.subjects import event_subject
from ops.bench.bench_projection import fleet_log
from projections import timelinestart, workrefs
from projections.base import fold_events
from projections.timeline import Selector, TimelineBuilder, TimelineLine
from servicekit.rebuild import state_at_seq
from servicekit.snapshotting import save_state
from tests.bus_harness import provisioned_bus


def _result(work_id: str, batch: str) -> ev.SelfplayComplete:
    return ev.SelfplayComplete(batch_id=batch, work_id=work_id, node="gpu-2", board_type="hex8", num_players=2,
                               num_games=5, source="gpu-2")


def test_a_body_may_name_an_item_only_when_it_holds_the_id_as_a_string_or_has_an_escape() -> None:
    assert workrefs.may_name(encode(_result("w-1", "b-1")), "w-1")
    assert not workrefs.may_name(encode(_result("w-10", "b-1")), "w-1")  # a longer id is not this one
    assert not workrefs.may_name(encode(_result("w-2", "b-1")), "w-1")
    escaped = encode(_result("w-1", "b-1")).replace(b'"w-1"', b'"w\\u002d1"')  # another encoder's same string
    assert msgspec.json.decode(escaped)["work_id"] == "w-1" and workrefs.may_name(escaped, "w-1")
    odd = 'w-"1'  # an id that needs escaping is in every body naming it with its escape
    assert workrefs.may_name(encode(_result(odd, "b-1")), odd)


def test_folding_only_the_results_that_may_name_an_item_gives_its_refs_as_folding_them_all() -> None:
    log = [e for e in fleet_log(3_000) if type(e).type_name() in workrefs.NAMING]
    everything = fold_events(workrefs.PROJECTION, enumerate(log, 1))
    for work_id in ("w-00000010", "t-00000020", "e-00000020", "w-00000150"):
        mine = [(seq, e) for seq, e in enumerate(log, 1) if workrefs.may_name(encode(e), work_id)]
        assert len(mine) < len(log) / 20
        assert workrefs.subjects_naming(fold_events(workrefs.PROJECTION, mine), work_id) == (
            workrefs.subjects_naming(everything, work_id)), work_id


async def _whole(bus: Bus, selector: Selector) -> list[TimelineLine]:
    builder = TimelineBuilder(selector)
    await replay(bus, builder)
    return builder.lines


async def test_a_work_items_timeline_lists_the_snapshots_once_and_says_what_the_whole_log_says_by_either_read(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(list(fleet_log(3_000)))
        end = await last_sequence(bus)
        for seq in range(1_000, end, 1_000):  # as the API keeps them
            await save_state(bus, timelinestart.PROJECTION, (await state_at_seq(bus, timelinestart.PROJECTION, seq)).state)
        for seq in (1_400, 2_000):
            await save_state(bus, workrefs.PROJECTION, (await state_at_seq(bus, workrefs.PROJECTION, seq)).state)
        # The newest index snapshot unreadable: the results after the older one it falls back to are read too.
        await save_snapshot(bus, kept_name(workrefs.PROJECTION.name, workrefs.PROJECTION.version, 2_000), b"not a snapshot")
        # A result past the index's snapshot, written by another encoder (escapes): the tail must still find it.
        late = encode(_result("w-00000010", "b-late")).replace(b'"w-00000010"', b'"w\\u002d00000010"')
        await bus.js.publish(event_subject("data", "b-late", "SELFPLAY_COMPLETE", "gpu-2"), late)

        listings = 0
        listed = eventbus.snapshots.kept_index

        async def counted(bus: Bus) -> dict[tuple[str, int], list[int]]:
            nonlocal listings
            listings += 1
            return await listed(bus)

        monkeypatch.setattr(servicekit.keptlisting, "kept_index", counted)
        monkeypatch.setattr(servicekit.snapshotting, "kept_index", counted)
        items = ("w-00000010", "w-00000095", "w-00000110", "t-00000100", "e-00000100", "w-00000180", "no-such")
        for work in items:
            listings = 0
            lines, _ = await read_timeline(bus, Selector(work=work))
            assert lines == await _whole(bus, Selector(work=work)), work
            assert listings <= 1, f"{work}: the snapshot bucket listed {listings} times"
        lines, _ = await read_timeline(bus, Selector(work="w-00000010"))
        assert lines[-1].type == "SELFPLAY_COMPLETE" and "b-late" in lines[-1].text
        # Over a range longer than SCAN_MAX_RECORDS the same filters are read one consumer each: the same lines.
        monkeypatch.setattr(timeline_cmd, "SCAN_MAX_RECORDS", 0)
        for work in items:
            assert (await read_timeline(bus, Selector(work=work)))[0] == await _whole(bus, Selector(work=work)), work
