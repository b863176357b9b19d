"""Retired ids packed one string per hash bucket: a map like a dict, saved and loaded as a few strings."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import events as ev
from projections import data, packedmap, wire, work
from projections.base import fold_events
from projections.bundle import fold_all_events
from projections.lineage import lineage
from projections.packedmap import PackedMap, added, packable
from projections.pmap import enc_hook
from projections.snapshot import decode_snapshot, encode_snapshot
from tests.terms import in_term
from tests.test_projections import PROPERTY, T0, numbered

pytestmark = pytest.mark.pure

IDS = st.text(alphabet="ab-1\t\n", min_size=0, max_size=6)
TEXTS = st.text(alphabet="xy 9\t\n", max_size=5)


def _packed(entries: dict[str, str]) -> PackedMap:
    out = PackedMap()
    for key, text in entries.items():
        out = added(out, key, text)
    return out


@PROPERTY
@given(st.dictionaries(IDS, TEXTS, max_size=40), st.lists(IDS, max_size=10))
def test_a_packed_map_answers_as_the_dict_of_its_entries_and_reads_back_as_saved(entries: dict[str, str], probes: list[str]) -> None:
    entries = {k: t for k, t in entries.items() if packable(k, t)}
    packed = _packed(entries)
    assert len(packed) == len(entries) and packed.to_dict() == entries and sorted(packed.keys()) == sorted(entries)
    for key in [*entries, *probes]:  # an id that is a prefix, a suffix or a part of another finds nothing of it
        assert packed.get(key) == entries.get(key) and (key in packed) == (key in entries)
    loaded = wire.decode(msgspec.msgpack.encode(packed, enc_hook=enc_hook), PackedMap)
    assert loaded == packed and loaded.to_dict() == entries


def test_an_entry_with_a_separator_in_its_id_or_a_newline_in_its_text_is_not_packable() -> None:
    assert packable("w-1", "2\tgpu-1") and packable("", "")
    assert not packable("w\t1", "") and not packable("w\n1", "") and not packable("w-1", "gpu\n1")


def test_a_year_of_ids_is_saved_as_at_most_one_string_per_bucket() -> None:
    packed = _packed({f"w-{i:07d}": f"1\tgpu-{i % 40}" for i in range(20_000)})
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(packed, enc_hook=enc_hook))
    assert len(packed) == 20_000 and len(decoded[0]) <= packedmap.BUCKETS  # [buckets, count]: a map of strings


def _jobs(ids: list[str]) -> list[ev.Event]:
    out: list[ev.Event] = [ev.LeaderElected(role="scheduler", node="gpu-1", epoch=1)]
    for w in ids:
        out += [ev.WorkAdded(work_id=w, work_type="selfplay", board_type="hex8", num_players=2, ts=T0),
                ev.WorkAssigned(work_id=w, node="gpu-1", attempt=1, deadline=T0, epoch=1),
                ev.WorkStarted(work_id=w, node="gpu-1", attempt=1),
                ev.WorkCompleted(work_id=w, node="gpu-1", attempt=1, duration_s=1.0)]
    return out


def test_retired_work_items_load_as_packed_strings_and_still_refuse_a_late_report_or_a_repeated_id() -> None:
    ids = [f"w-{i}" for i in range(300)] + ["w\ttab"]
    state = fold_events(work.PROJECTION, numbered(_jobs(ids)), work.WorkState(retire_after=10))
    loaded = decode_snapshot(work.PROJECTION, encode_snapshot(work.PROJECTION, state))
    assert loaded is not None and loaded.state == state
    retired = loaded.state.retired
    assert isinstance(retired, PackedMap) and len(retired) >= 290 and len(retired.buckets) <= packedmap.BUCKETS
    assert "w\ttab" not in retired and loaded.state.items["w\ttab"].status is work.WorkStatus.COMPLETED  # kept: not packable
    late = [ev.WorkProgress(work_id="w-0", node="gpu-2", attempt=1, fraction=0.5), ev.WorkAdded(
        work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, ts=T0)]
    after = fold_events(work.PROJECTION, [(state.last_seq + i, e) for i, e in enumerate(late, 1)], loaded.state)
    assert [a.reason for a in after.anomalies[-2:]] == [
        "from superseded attempt 1 on gpu-2 (current attempt is 1 on gpu-1)", "work w-1 was already added"]
    assert work.lookup(after, "w-0") == work.WorkItem(work_id="w-0", work_type="", board_type="", num_players=0,
                                                      status=work.WorkStatus.COMPLETED, attempt=1, node="gpu-1")


def test_a_retired_batch_keeps_its_games_and_a_batch_with_a_tab_in_its_id_stays() -> None:
    state = data.DataState(retired=added(PackedMap(), "b-1", "500"))
    assert data.retired_games(state, "b-1") == 500 and data.retired_games(state, "b-2") is None
    assert data.is_retired(state, "b-1") and not data.is_retired(state, "b-")
    batch = data.Batch(batch_id="b\t2", work_id="w-2", node="gpu-1", board_type="hex8", num_players=2, num_games=1)
    held = msgspec.structs.replace(state, batches=state.batches.set("b\t2", batch))
    assert not data._settled(held, "b\t2") and data._settled(held, "b-9")


def test_a_models_lineage_counts_the_games_of_its_retired_input_batches() -> None:
    log = [ev.TrainingComplete(model_id="m-1", work_id="t-1", node="n1", board_type="hex8", num_players=2,
                               input_batches=["b-1", "b-2"])]
    ps = fold_all_events(enumerate(in_term(log), 1))
    ps = msgspec.structs.replace(ps, data=msgspec.structs.replace(ps.data, retired=added(PackedMap(), "b-1", "500")))
    found = lineage(ps, "m-1")
    assert found is not None and found.games == 500
    assert [(b.batch_id, b.known, b.retired_games) for b in found.batches] == [("b-1", True, 500), ("b-2", False, 0)]
