"""The timeline's work-ref index one KV entry per item: keys, what a write holds, who writes it, and the lines a lookup gives."""

from __future__ import annotations

import base64
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventbus.kventries
import eventbus.snapshots
import servicekit.keptlisting
import servicekit.snapshotting
from cli.commands import timeline as timeline_cmd
from cli.commands.timeline import read_timeline
from eventbus import events as ev
from eventbus.connection import Bus
from eventbus.errors import BusError, BusUnavailable
from eventbus.events import encode
from eventbus.history import last_sequence, replay
from eventbus.kventries import advance_entries, bucket_stream, ensure_entries_bucket, entry_key, get_entry, put_entries
from eventbus.objectdelete import delete_object
from eventbus.publisher import Publisher
from eventbus.snapshots import SNAPSHOT_BUCKET, kept_name
from eventbus.subjects import event_subject
from ops.bench.bench_projection import fleet_log
from projections import timelinestart, workrefs
from projections.base import fold_events
from projections.bundle import fold_all_events
from projections.pmap import PMap
from projections.timeline import Selector, TimelineBuilder, TimelineLine
from projections.workrefs import Entry, Position, WorkRefs
from servicekit import workrefentries
from servicekit.rebuild import state_at_seq
from servicekit.snapshotting import save_state
from servicekit.workrefentries import BUCKET, POSITION_KEY, EntryWriter, lookup
from tests.api_harness import fleet_log as api_fleet_log
from tests.api_harness import running_api, wait_caught_up
from tests.bus_harness import provisioned_bus

_KV_KEY = re.compile(r"[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*")  # nats-py's rule for a valid key


@given(st.text(min_size=1, max_size=40))
def test_every_id_has_a_valid_key_of_its_own_that_no_other_id_and_not_the_position_has(ident: str) -> None:
    key = entry_key(ident)
    assert _KV_KEY.fullmatch(key) and key != POSITION_KEY
    if key.startswith("_b64_"):  # encoded: the id comes back out of it
        encoded = key.removeprefix("_b64_")
        assert base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode() == ident
    else:
        assert key == ident and not key.startswith("_")


@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 3)),
       st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3) | st.none()), max_size=12),
       st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3) | st.none()), max_size=12),
       st.booleans())
def test_the_keys_changed_since_an_older_map_are_those_bound_differently(
        base: dict[str, int], first: list[tuple[str, int | None]], then: list[tuple[str, int | None]], over: bool) -> None:
    older: PMap[str, Any] = PMap.over(dict(base)) if over else PMap(base)
    for key, value in first:
        older = older.remove(key) if value is None else older.set(key, (value,))
    newer = older
    for key, value in then:
        newer = newer.remove(key) if value is None else newer.set(key, (value,))
    expected = {k for k in set(older.keys()) | set(newer.keys()) if older.get(k) != newer.get(k)}
    changed = list(newer.changed_since(older))
    assert expected <= set(changed) and len(changed) == len(set(changed))
    # Beyond the keys that differ, only keys set again to an equal value (a new object) may be named.
    assert all(k in dict(then) for k in set(changed) - expected)
    assert set(newer.changed_since(PMap(newer.to_dict()))) == set()  # another base: compared by value


def test_an_entry_stands_for_the_position_and_only_a_later_one_replaces_it() -> None:
    position = Position(last_seq=2_000)
    assert workrefs.from_entry("w-1", position, None) == WorkRefs(last_seq=2_000)
    earlier = workrefs.from_entry("w-1", position, Entry(as_of=1_200, subjects=("rr.evt.data.b-1.>",)))
    assert earlier.last_seq == 2_000 and workrefs.subjects_naming(earlier, "w-1") == ("rr.evt.data.b-1.>",)
    assert workrefs.newer_entry(Entry(as_of=1_300), Entry(as_of=1_200))
    assert not workrefs.newer_entry(Entry(as_of=1_000), Entry(as_of=1_200))


def test_the_entries_written_are_the_items_whose_refs_changed() -> None:
    log = list(enumerate(fleet_log(2_000), 1))
    before = fold_events(workrefs.PROJECTION, log[:1_000])
    after = fold_events(workrefs.PROJECTION, log[1_000:], before)
    written = dict(workrefs.changed_entries(after, before))
    assert written and all(e.as_of == after.last_seq for e in written.values())
    assert {k: e.subjects for k, e in written.items()} == {
        k: v for k, v in after.refs.items() if before.refs.get(k) != v}
    assert len(workrefs.changed_entries(after, None)) == len(after.refs)


async def _whole(bus: Bus, selector: Selector) -> list[TimelineLine]:
    builder = TimelineBuilder(selector)
    await replay(bus, builder)
    return builder.lines


def _index_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record each load of the index's snapshot by the timeline (its bound)."""
    loads: list[int] = []
    load = timeline_cmd.load_listed

    async def counted(bus: Bus, projection: Any, who: str, listing: Any, *, not_after_seq: int) -> Any:
        if projection is workrefs.PROJECTION:
            loads.append(not_after_seq)
        return await load(bus, projection, who, listing, not_after_seq=not_after_seq)

    monkeypatch.setattr(timeline_cmd, "load_listed", counted)
    return loads


def _listings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record each listing of the snapshot bucket."""
    made: list[int] = []
    listed = eventbus.snapshots.kept_index

    async def counted(bus: Bus) -> dict[tuple[str, int], list[int]]:
        made.append(1)
        return await listed(bus)

    monkeypatch.setattr(servicekit.keptlisting, "kept_index", counted)
    monkeypatch.setattr(servicekit.snapshotting, "kept_index", counted)
    return made


async def test_a_work_items_timeline_reads_its_entry_not_the_index_and_says_what_the_whole_log_says(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(list(fleet_log(3_000)))
        end = await last_sequence(bus)
        for seq in range(1_000, end, 1_000):
            await save_state(bus, timelinestart.PROJECTION, (await state_at_seq(bus, timelinestart.PROJECTION, seq)).state)
        await save_state(bus, workrefs.PROJECTION, (await state_at_seq(bus, workrefs.PROJECTION, 2_000)).state)
        # One writer at 1,400 (every item), then at 2,000 (the changed ones); a lagging one at 1,000 replaces nothing.
        writer = EntryWriter(bus)
        everything = await writer.write((await state_at_seq(bus, workrefs.PROJECTION, 1_400)).state)
        changed = await writer.write((await state_at_seq(bus, workrefs.PROJECTION, 2_000)).state)
        assert everything > changed > 0
        assert await EntryWriter(bus).write((await state_at_seq(bus, workrefs.PROJECTION, 1_000)).state) == 0
        assert (position := await workrefentries.read_position(bus)) is not None and position.last_seq == 2_000
        # A result past the entries, written by another encoder (escapes): the tail must still find it.
        late = encode(ev.SelfplayComplete(batch_id="b-late", work_id="w-00000010", node="gpu-2", board_type="hex8",
                                          num_players=2, num_games=5, source="gpu-2"))
        late = late.replace(b'"w-00000010"', b'"w\\u002d00000010"')
        await bus.js.publish(event_subject("data", "b-late", "SELFPLAY_COMPLETE", "gpu-2"), late)

        loads, listings = _index_loads(monkeypatch), _listings(monkeypatch)
        items = ("w-00000010", "w-00000001", "w-00000095", "w-00000110", "t-00000100", "e-00000100", "w-00000180", "no-such")
        for work in items:
            assert (await read_timeline(bus, Selector(work=work)))[0] == await _whole(bus, Selector(work=work)), work
        assert loads == [], "the index's snapshot was loaded"
        assert listings == [], "the snapshot bucket was listed: the position names the cluster snapshots"
        lines, _ = await read_timeline(bus, Selector(work="w-00000010"))
        assert lines[-1].type == "SELFPLAY_COMPLETE" and "b-late" in lines[-1].text

        # The newest cluster snapshot the position names was pruned since: an older one, else the listing, says where to start.
        await delete_object(bus, SNAPSHOT_BUCKET, kept_name(timelinestart.PROJECTION.name, timelinestart.PROJECTION.version, 2_000))
        for starts in ((1_000, 2_000), (2_000,)):
            stale = Position(last_seq=2_000, starts=starts)
            await put_entries(bus, BUCKET, [(POSITION_KEY, msgspec.msgpack.encode(stale))])
            for work in ("w-00000150", "w-00000180"):  # first records past 2,000
                assert (await read_timeline(bus, Selector(work=work)))[0] == await _whole(bus, Selector(work=work)), work
        assert listings, "the listing was not consulted once the named snapshots were gone"

        # A position of another version of the index: its entries are another shape, the snapshot is read.
        await put_entries(bus, BUCKET, [(POSITION_KEY, msgspec.msgpack.encode(Position(last_seq=2_000, version=99)))])
        assert await lookup(bus, "w-00000010") is None
        for work in items[:3]:
            assert (await read_timeline(bus, Selector(work=work)))[0] == await _whole(bus, Selector(work=work)), work
        assert len(loads) == 3


async def test_a_writer_resumed_behind_the_entries_writes_only_what_changed_and_ahead_of_them_writes_all(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        log = list(enumerate(fleet_log(2_000), 1))
        await Publisher(bus).publish_many([event for _, event in log])
        at = {800: fold_events(workrefs.PROJECTION, log[:800])}  # each state folded on from the one before, as a writer's are
        at[1_200] = fold_events(workrefs.PROJECTION, log[800:1_200], at[800])
        at[1_600] = fold_events(workrefs.PROJECTION, log[1_200:1_600], at[1_200])
        assert await EntryWriter(bus).write(at[1_200]) == len(at[1_200].refs)  # a new bucket: every item
        resumed = EntryWriter(bus)
        resumed.resumed(at[800])  # restarted from an older snapshot: the entries reach past it
        expected = {k for k, v in at[1_600].refs.items() if at[800].refs.get(k) != v}
        assert await resumed.write(at[1_600]) == len(expected)
        ahead = EntryWriter(bus)
        ahead.resumed(at[1_600].__class__(last_seq=1_900, refs=at[1_600].refs))  # its start is past the entries'
        assert await ahead.write(msgspec.structs.replace(at[1_600], last_seq=1_950)) == len(at[1_600].refs)
        for work_id, subjects in at[1_600].refs.items():
            found = await lookup(bus, work_id)
            assert found is not None and workrefs.subjects_naming(found, work_id) == subjects
        # The bucket deleted under a running writer: one write fails, the next makes it again and writes every item.
        await bus.js.delete_stream(bucket_stream(BUCKET))
        later = msgspec.structs.replace(at[1_600], last_seq=1_990)
        with pytest.raises(BusError):
            await ahead.write(later)
        assert await lookup(bus, "w-00000001") is None
        assert await ahead.write(later) == len(later.refs)
        assert await lookup(bus, "w-00000001") is not None


def _cut_after(monkeypatch: pytest.MonkeyPatch, batches: int) -> Any:
    """The bucket's writes fail partway: `batches` batches stored whole, then half of the next, then no answer; returns the real writer."""
    real = eventbus.kventries._guarded
    calls = 0

    async def cut(bus: Bus, bucket: str, due: Any, landed: Any = None) -> list[bool]:
        nonlocal calls
        calls += 1
        if calls <= batches:
            return await real(bus, bucket, due, landed)
        await real(bus, bucket, due[:len(due) // 2], landed)
        raise BusUnavailable("JetStream did not answer writing (test)")

    monkeypatch.setattr(eventbus.kventries, "_guarded", cut)
    return real


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each key read from a bucket."""
    reads: list[str] = []
    real_get = eventbus.kventries.get_entry_at

    async def counted(bus: Bus, bucket: str, key: str) -> tuple[bytes | None, int]:
        reads.append(key)
        return await real_get(bus, bucket, key)

    monkeypatch.setattr(eventbus.kventries, "get_entry_at", counted)
    return reads


async def test_after_a_write_that_failed_the_next_reads_only_the_keys_changed_since_the_last_whole_one(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with provisioned_bus(nats_url) as bus:
        log = list(enumerate(fleet_log(2_000), 1))
        first = fold_events(workrefs.PROJECTION, log[:1_500])
        second = fold_events(workrefs.PROJECTION, log[1_500:], first)
        changed = {k for k, v in second.refs.items() if first.refs.get(k) != v}
        assert 0 < len(changed) < len(second.refs) // 2
        writer = EntryWriter(bus)
        assert await writer.write(first) == len(first.refs)

        async def unanswered(*args: Any) -> Any:
            raise BusUnavailable("JetStream did not answer (test)")

        monkeypatch.setattr(workrefentries, "kept_snapshots", unanswered)  # fails after the entries, before the position
        with pytest.raises(BusUnavailable):
            await writer.write(second)
        monkeypatch.undo()
        reads = _reads(monkeypatch)
        assert await writer.write(second) == 0  # the failed write had stored them; only the position is new
        assert sorted(reads) == sorted([entry_key(k) for k in changed] + [POSITION_KEY])
        monkeypatch.undo()
        position = await workrefentries.read_position(bus)
        assert position is not None and position.last_seq == second.last_seq
        for work_id, subjects in second.refs.items():
            found = await lookup(bus, work_id)
            assert found is not None and workrefs.subjects_naming(found, work_id) == subjects


@pytest.mark.parametrize("retried_at", ["the same state", "a later state"])
async def test_a_first_fill_that_failed_partway_is_finished_without_reading_back_what_it_stored(
        nats_url: str, monkeypatch: pytest.MonkeyPatch, retried_at: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        log = list(enumerate(fleet_log(2_000), 1))
        first = fold_events(workrefs.PROJECTION, log[:1_500])
        later = fold_events(workrefs.PROJECTION, log[1_500:], first) if retried_at == "a later state" else first
        changed = {entry_key(k) for k, v in later.refs.items() if first.refs.get(k) != v}
        monkeypatch.setattr(eventbus.kventries, "IN_FLIGHT", 20)
        real = _cut_after(monkeypatch, batches=2)
        writer = EntryWriter(bus)
        with pytest.raises(BusUnavailable):
            await writer.write(first)  # a first fill: 20 + 20 + 10 entries stored, then the server stops answering
        stored = {key for key, _ in workrefentries.encoded_entries(first, None)[:50]}
        monkeypatch.setattr(eventbus.kventries, "_guarded", real)
        reads = _reads(monkeypatch)
        assert await writer.write(later) == len(later.refs) - len(stored - changed)
        # Only the position is read (for the fill's baseline, and before writing it): none of the 50 keys stored.
        assert sorted(set(reads) - changed) == [POSITION_KEY]
        monkeypatch.undo()
        if retried_at == "the same state":  # the bucket a clean fill leaves, byte for byte
            for key, value in workrefentries.encoded_entries(first, None):
                assert await get_entry(bus, BUCKET, key) == value, key
        for work_id, subjects in later.refs.items():
            found = await lookup(bus, work_id)
            assert found is not None and found.last_seq == later.last_seq
            assert workrefs.subjects_naming(found, work_id) == subjects, work_id


async def test_a_guarded_write_reads_a_key_it_expected_absent_and_keeps_what_may_not_be_replaced(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await ensure_entries_bucket(bus, "t_entries", "test")
        await put_entries(bus, "t_entries", [("k1", b"x")])
        known: dict[str, int] = {}
        always = await advance_entries(bus, "t_entries", [("k1", b"y"), ("k2", b"z")], lambda k, ours, stored: True, known=known)
        assert always == 2 and await get_entry(bus, "t_entries", "k1") == b"y"  # expected absent, found, read, replaced
        assert set(known) == {"k1", "k2"}  # what landed, with its revision
        assert await advance_entries(bus, "t_entries", [("k1", b"old")], lambda k, ours, stored: ours > stored) == 0
        assert await get_entry(bus, "t_entries", "k1") == b"y"


async def test_the_api_writes_every_items_entry_when_it_saves_its_snapshots(nats_url: str, eventually: Any) -> None:
    log = api_fleet_log()
    async with running_api(nats_url, snapshot_every_events=10, snapshot_min_interval_s=0) as api:
        published = await api.publish(*log)
        await wait_caught_up(api.base, published[-1].seq)

        async def position_past(seq: int) -> bool:
            data = await get_entry(api.bus, BUCKET, POSITION_KEY)
            return data is not None and msgspec.msgpack.decode(data, type=Position).last_seq >= seq

        await eventually(lambda: position_past(20), message="the entries' position at seq 20 or later")
        whole = fold_all_events(list(enumerate(log, 1))).workrefs
        assert whole.refs
        for work_id, subjects in whole.refs.items():
            found = await lookup(api.bus, work_id)
            assert found is not None
            assert set(workrefs.subjects_naming(found, work_id)) <= set(subjects)  # as of its position
