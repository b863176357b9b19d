"""The maps that grow with the log and are only read by key stay msgpack after a load is settled, and read as saved."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from ops.bench.bench_projection import fleet_log
from projections import bundle, taint, wire, work
from projections.base import fold_events
from projections.pmap import PMap, settle
from projections.pmap import enc_hook as pmap_enc_hook
from projections.snapshot import decode_snapshot, encode_snapshot
from tests.test_projections import numbered

pytestmark = pytest.mark.pure


def _still_msgpack(bindings: PMap[Any, Any]) -> int:
    return sum(type(value) is msgspec.Raw for value in bindings._base.values())


@pytest.fixture(scope="module")
def folded() -> bundle.ProjectionSet:
    # Work items retiring 500 records after completion, so that work's retired map fills in a short log.
    start = msgspec.structs.replace(bundle.PROJECTION.initial(), work=work.WorkState(retire_after=500))
    return fold_events(bundle.PROJECTION, numbered(list(fleet_log(6_000))), start)


def _loaded(state: bundle.ProjectionSet) -> bundle.ProjectionSet:
    loaded = decode_snapshot(bundle.PROJECTION, encode_snapshot(bundle.PROJECTION, state))
    assert loaded is not None
    settle(loaded.state)
    return loaded.state


def _by_key(state: bundle.ProjectionSet) -> dict[str, PMap[Any, Any]]:
    return {"workrefs.refs": state.workrefs.refs, "taint.batches": state.taint.batches}


def test_settling_leaves_the_maps_read_by_key_as_msgpack_and_decodes_the_rest(folded: bundle.ProjectionSet) -> None:
    loaded = _loaded(folded)
    for name, bindings in _by_key(loaded).items():
        assert len(bindings) > 100 and _still_msgpack(bindings) == len(bindings), name
    decoded: dict[str, PMap[Any, Any]] = {"work.items": loaded.work.items, "data.batches": loaded.data.batches}
    for name, whole in decoded.items():
        assert len(whole) > 10 and _still_msgpack(whole) == 0, name  # gone over whole: decoded in the settle
    assert loaded == folded  # equality goes over every value: all decoded, nothing lost


def test_a_map_read_by_key_decodes_one_value_per_read_and_none_for_its_keys(folded: bundle.ProjectionSet) -> None:
    loaded = _loaded(folded)
    for name, bindings in _by_key(loaded).items():
        original = _by_key(folded)[name]
        assert sorted(bindings.keys()) == sorted(original.keys()) and _still_msgpack(bindings) == len(bindings), name
        key = sorted(original.keys())[len(original) // 2]
        assert bindings[key] == original[key] and _still_msgpack(bindings) == len(bindings) - 1, name


def test_a_quarantine_taints_the_same_lineage_from_an_unsettled_load(folded: bundle.ProjectionSet) -> None:
    node = next(iter(folded.taint.batches.values())).node
    quarantine = taint.Quarantine(quarantine_id="q-1", kind="node", target=node, reason="bad disk", seq=1)
    loaded = _loaded(folded)
    assert _still_msgpack(loaded.taint.batches) == len(loaded.taint.batches)
    marked = msgspec.structs.replace(loaded.taint, quarantines=loaded.taint.quarantines.set("q-1", quarantine))
    expected = msgspec.structs.replace(folded.taint, quarantines=folded.taint.quarantines.set("q-1", quarantine))
    found = taint.tainted(marked)
    assert found == taint.tainted(expected) and len(found.batches) > 10


def test_a_field_decoded_alone_by_key_is_left_as_msgpack_by_settle_as_within_its_state(folded: bundle.ProjectionSet) -> None:
    packed = msgspec.msgpack.encode(folded.taint.batches, enc_hook=pmap_enc_hook)
    kind = PMap[str, taint.BatchFacts]
    alone, settled = wire.decode(packed, kind, by_key=True), wire.decode(packed, kind)
    settle(alone)
    settle(settled)
    assert _still_msgpack(alone) == len(alone) > 100 and _still_msgpack(settled) == 0
    assert alone == settled == folded.taint.batches


def test_a_save_after_an_unsettled_load_writes_the_same_bytes_and_leaves_the_values_unread(folded: bundle.ProjectionSet) -> None:
    saved = encode_snapshot(bundle.PROJECTION, folded)
    loaded = _loaded(folded)
    assert encode_snapshot(bundle.PROJECTION, loaded) == saved
    for name, bindings in _by_key(loaded).items():
        assert _still_msgpack(bindings) == len(bindings), name
    key = sorted(folded.workrefs.refs.keys())[0]  # a change over the loaded base is written as changed
    changed = msgspec.structs.replace(loaded, workrefs=msgspec.structs.replace(loaded.workrefs, refs=loaded.workrefs.refs.remove(key)))
    again = decode_snapshot(bundle.PROJECTION, encode_snapshot(bundle.PROJECTION, changed))
    assert again is not None and key not in again.state.workrefs.refs and again.state == changed
