"""The bundle's parts with their maps as plain dicts while the set is held open: every part as its own fold leaves it (pure, no server)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import events as ev
from eventbus.history import Record
from projections import bundle, data, dictmap, taint, work, workrefs, workretirement
from projections.base import Folder
from projections.pmap import PMap
from tests.test_projections import LOGS, PROPERTY, _spoiled, records
from tests.test_report_runs import reporting_logs
from tests.test_set_step import RETIRING, STARTS, _healthy_life, _part_by_part


def _open_at_once(patch: pytest.MonkeyPatch) -> None:
    """The parts' maps opened after every event, whatever they hold (a rebuild waits for 1024 events)."""
    patch.setattr(bundle, "DICTS_AFTER", 1)
    patch.setattr(bundle, "OPEN_ENTRIES_PER_EVENT", 10**9)


def _logs_opened(stored: list[Record], start: bundle.ProjectionSet, reads: set[int]) -> None:
    """`_part_by_part`, and every part of `bundle.OPEN_PARTS` did open its maps (as dicts) while nothing read the set."""
    opened: list[dict[str, bool]] = []
    apply = bundle._OpenSet.apply

    def noting(held: Any, event: ev.Event, seq: int) -> None:
        apply(held, event, seq)
        opened.append({name: type(getattr(held._parts[name], fields[0])) is dictmap.DictMap
                       for name, fields in bundle.OPEN_PARTS.items()})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bundle._OpenSet, "apply", noting)
        _part_by_part(start, stored, reads)
    for name, fields in bundle.OPEN_PARTS.items():
        assert not opened or opened[-1][name] or not dictmap.openable(getattr(start, name), fields)


def test_every_open_part_is_named() -> None:
    assert bundle.OPEN_PARTS == {"data": data.OPEN_MAPS, "work": work.DICT_MAPS, "taint": taint.DICT_MAPS,
                                 "workrefs": workrefs.DICT_MAPS}


@PROPERTY
@given(st.one_of(LOGS, reporting_logs()), st.data())
def test_the_data_part_held_as_dicts_folds_as_its_own_fold_does(log: list[ev.Event], data_: st.DataObject) -> None:
    stored = _spoiled(log, data_)
    reads = set(data_.draw(st.lists(st.integers(0, len(stored)), max_size=4)))
    with pytest.MonkeyPatch.context() as patch:
        _open_at_once(patch)
        for start in STARTS:
            _logs_opened(stored, start, reads)


def _lives(count: int) -> list[ev.Event]:
    log: list[ev.Event] = [ev.LeaderElected(role="scheduler", node="gpu-1", epoch=1, source="gpu-1")]
    for i in range(count):
        log += _healthy_life(f"w-{i}", f"gpu-{2 + i % 3}")
    return log


def _lives_folded_opened(monkeypatch: pytest.MonkeyPatch) -> bundle.ProjectionSet:
    """Eight lives folded with the maps opened at once, part by part against each part's own fold; the set folded."""
    _open_at_once(monkeypatch)
    for start in STARTS:
        _part_by_part(start, records(_lives(8)), reads={20, 41})
    state = Folder(bundle.PROJECTION)
    for record in records(_lives(8)):
        state(record)
    return state.state


def test_a_data_fold_raising_after_its_first_writes_is_undone_and_recorded_as_its_own_fold_records_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # `_touched` runs after a report's and a copy's own writes (the batch, its transfer): raising there
    # leaves them in the open dicts unless they are undone before the data fold folds the event again.
    touched = data._touched

    def failing(state: data.DataState, batch_id: str, seq: int) -> data.DataState:
        if batch_id in {"bw-3", "bw-5"} and seq % 2:
            raise RuntimeError("disk on fire")
        return touched(state, batch_id, seq)

    monkeypatch.setattr(data, "_touched", failing)
    state = _lives_folded_opened(monkeypatch)
    assert state.data.anomaly_count >= 2 and "bw-3" not in state.data.transfers


def test_a_work_fold_raising_after_its_first_writes_is_undone_and_recorded_as_its_own_fold_records_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A completion writes `completions` and `items` before it recounts the item's status: raising there
    # leaves the item completed in the open dicts unless they are undone before the work fold folds the
    # event again (and raises again, recorded as its anomaly).
    recounted = work._recounted

    def failing(counts: dict[str, int], was: work.WorkStatus | None, now: work.WorkStatus) -> dict[str, int]:
        if now is work.WorkStatus.COMPLETED:
            raise RuntimeError("disk on fire")
        return recounted(counts, was, now)

    monkeypatch.setattr(work, "_recounted", failing)
    state = _lives_folded_opened(monkeypatch)
    assert state.work.anomaly_count == 8 and not state.work.completions
    assert all(item.status is work.WorkStatus.RUNNING for item in state.work.items.values())


def test_a_retirement_raising_after_its_packed_write_is_undone_and_recorded_as_the_work_fold_records_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A retirement writes the retired id into its packed map's open bucket before it counts the item in its
    # tally: raising there leaves the id in the bucket (while the map's count says it is not there) unless undone.
    def failing(**_: object) -> workretirement.Retired:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(workretirement, "Retired", failing)
    _open_at_once(monkeypatch)
    folder = Folder(bundle.PROJECTION, RETIRING)
    for record in records(_lives(8)):
        folder(record)
    state = folder.state.work
    assert type(state.retired.buckets) is PMap
    assert state.anomaly_count > 0 and len(state.retired) == 0 and not list(state.retired.items())


def test_the_packed_maps_open_their_buckets_and_a_read_freezes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    _open_at_once(monkeypatch)
    folder, per_event = Folder(bundle.PROJECTION, RETIRING), Folder(dataclasses.replace(bundle.PROJECTION, folding=None), RETIRING)
    for record in records(_lives(8)):
        folder(record)
        per_event(record)
    held = folder._open._inner._parts  # type: ignore[union-attr]
    assert type(held["work"].retired.buckets) is dictmap.DictMap and type(held["data"].retired.buckets) is dictmap.DictMap
    state = folder.state
    assert type(state.work.retired.buckets) is PMap and type(state.data.retired.buckets) is PMap
    assert len(state.work.retired) > 0 and len(state.data.retired) > 0 and state == per_event.state


@pytest.mark.parametrize("name", ["taint", "workrefs"])
def test_a_bucket_map_fold_raising_after_its_write_is_undone_and_recorded_as_its_own_fold_records_it(
        monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # The taint and workrefs folds write their bucket map (an open dict) as their last step: a fold raising
    # after it leaves the batch or item in the dict unless its write is undone before the part's error is recorded.
    fold = bundle._RAW_FOLDS[name]

    def failing(state: Any, event: ev.Event, seq: int) -> Any:
        folded = fold(state, event, seq)
        if getattr(event, "work_id", "") in {"w-3", "w-5"}:
            raise RuntimeError("disk on fire")
        return folded

    monkeypatch.setitem(bundle._RAW_FOLDS, name, failing)
    _open_at_once(monkeypatch)
    folder = Folder(bundle.PROJECTION)
    for record in records(_lives(8)):
        folder(record)
    state = folder.state
    assert getattr(state, name).anomaly_count == 2
    kept = sorted(state.taint.batches.keys()) if name == "taint" else sorted(state.workrefs.refs.keys())
    prefix = "b" if name == "taint" else ""  # a batch's id, or the work item's
    assert kept == [f"{prefix}w-{i}" for i in (0, 1, 2, 4, 6, 7)]


def test_a_bucket_map_frozen_at_once_equals_the_map_built_a_write_at_a_time() -> None:
    entries = {f"b-{i}": taint.BatchFacts(node=f"gpu-{i % 3}") for i in range(5000)}
    one_by_one = taint.BatchFactsMap()
    for key, value in entries.items():
        one_by_one = one_by_one.set(key, value)
    at_once = taint.BatchFactsMap.of(entries)
    assert at_once == one_by_one and len(at_once) == 5000
    assert [list(b.entries) for b in at_once.buckets.values()] == [list(one_by_one.buckets[i].entries) for i in at_once.buckets.keys()]


def _persistent(part: Any, fields: tuple[str, ...]) -> bool:
    """Whether every map `fields` names is persistent: a PMap, or a packed map whose buckets are one."""
    return all(type(held := getattr(part, name)) is PMap or type(held.buckets) is PMap for name in fields)


def test_a_read_freezes_the_maps_and_a_reader_every_few_events_never_opens_them() -> None:
    stored = records(_lives(200))  # 1,601 records
    folder = Folder(bundle.PROJECTION)
    for record in stored[:bundle.DICTS_AFTER]:
        folder(record)
    assert type(folder._open._inner._parts["data"].batches) is dictmap.DictMap  # type: ignore[union-attr]
    assert type(folder._open._inner._parts["work"].items) is dictmap.DictMap  # type: ignore[union-attr]
    assert type(folder._open._inner._parts["taint"].batches) is dictmap.DictMap  # type: ignore[union-attr]
    assert type(folder._open._inner._parts["workrefs"].refs) is dictmap.DictMap  # type: ignore[union-attr]
    assert _persistent(folder.state.data, data.OPEN_MAPS)
    assert _persistent(folder.state.work, work.DICT_MAPS)
    assert type(folder.state.taint.batches) is taint.BatchFactsMap and type(folder.state.workrefs.refs) is workrefs.RefsMap
    live, per_event = Folder(bundle.PROJECTION), Folder(dataclasses.replace(bundle.PROJECTION, folding=None))
    for record in stored:
        live(record)
        per_event(record)
        assert _persistent(live.state.data, data.OPEN_MAPS)
        assert _persistent(live.state.work, work.DICT_MAPS)
        assert type(live.state.taint.batches) is taint.BatchFactsMap
    assert live.state == per_event.state
