"""The maps that grow with the log and are only read by key stay msgpack after a load is settled, and read as saved.

The lineage's batches and the timeline's index are bucket maps (projections/bucketmap.py): what
stays msgpack is each bucket, and a read by key decodes the one bucket its id hashes to.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from ops.bench.bench_projection import fleet_log
from projections import bundle, taint, wire, work
from projections.base import fold_events
from projections.bucketmap import BucketMap
from projections.pmap import PMap, decode_all, settle
from projections.pmap import enc_hook as pmap_enc_hook
from projections.snapshot import decode_snapshot, encode_snapshot
from tests.test_projections import numbered

pytestmark = pytest.mark.pure


def _still_msgpack(bindings: PMap[Any, Any] | BucketMap) -> int:
    """How many values (a bucket map's: buckets) are still msgpack."""
    held = bindings.buckets if isinstance(bindings, BucketMap) else bindings
    return sum(type(value) is msgspec.Raw for value in held._base.values())


def _buckets(bindings: BucketMap) -> int:
    return len(bindings.buckets)


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


def _by_key(state: bundle.ProjectionSet) -> dict[str, BucketMap]:
    return {"workrefs.refs": state.workrefs.refs, "taint.batches": state.taint.batches}


def test_settling_leaves_the_maps_read_by_key_as_msgpack_and_decodes_the_rest(folded: bundle.ProjectionSet) -> None:
    loaded = _loaded(folded)
    for name, bindings in _by_key(loaded).items():
        assert len(bindings) > 100 and _buckets(bindings) > 100 and _still_msgpack(bindings) == _buckets(bindings), name
    decoded: dict[str, PMap[Any, Any]] = {"work.items": loaded.work.items, "data.batches": loaded.data.batches}
    for name, whole in decoded.items():
        assert len(whole) > 10 and _still_msgpack(whole) == 0, name  # gone over whole: decoded in the settle
    assert loaded == folded  # equality goes over every value: all decoded, nothing lost


def test_a_map_read_by_key_decodes_one_bucket_per_read(folded: bundle.ProjectionSet) -> None:
    loaded = _loaded(folded)
    for name, bindings in _by_key(loaded).items():
        original = _by_key(folded)[name]
        assert len(bindings) == len(original) and _still_msgpack(bindings) == _buckets(bindings), name
        key = sorted(original.keys())[len(original) // 2]
        assert bindings[key] == original[key] and _still_msgpack(bindings) == _buckets(bindings) - 1, name
        assert key in bindings and _still_msgpack(bindings) == _buckets(bindings) - 1, name  # that bucket stays decoded
        assert sorted(bindings.keys()) == sorted(original.keys()), name


def test_a_quarantine_taints_the_same_lineage_from_an_unsettled_load(folded: bundle.ProjectionSet) -> None:
    node = next(iter(folded.taint.batches.values())).node
    quarantine = taint.Quarantine(quarantine_id="q-1", kind="node", target=node, reason="bad disk", seq=1)
    loaded = _loaded(folded)
    assert _still_msgpack(loaded.taint.batches) == _buckets(loaded.taint.batches)
    marked = msgspec.structs.replace(loaded.taint, quarantines=loaded.taint.quarantines.set("q-1", quarantine))
    expected = msgspec.structs.replace(folded.taint, quarantines=folded.taint.quarantines.set("q-1", quarantine))
    found = taint.tainted(marked)
    assert found == taint.tainted(expected) and len(found.batches) > 10


def test_a_bucket_map_decoded_alone_is_left_as_msgpack_by_settle_as_within_its_state(folded: bundle.ProjectionSet) -> None:
    packed = msgspec.msgpack.encode(folded.taint.batches, enc_hook=pmap_enc_hook)
    alone = wire.decode(packed, taint.BatchFactsMap)
    settle(alone)
    assert _still_msgpack(alone) == _buckets(alone) > 100
    decode_all(alone.buckets)  # what `taint.decode_lineage` does while a quarantine is in force
    assert _still_msgpack(alone) == 0 and alone == folded.taint.batches


def test_a_save_after_an_unsettled_load_writes_the_same_bytes_and_leaves_the_values_unread(folded: bundle.ProjectionSet) -> None:
    saved = encode_snapshot(bundle.PROJECTION, folded)
    loaded = _loaded(folded)
    assert encode_snapshot(bundle.PROJECTION, loaded) == saved
    for name, bindings in _by_key(loaded).items():
        assert _still_msgpack(bindings) == _buckets(bindings), name
    key = sorted(folded.workrefs.refs.keys())[0]  # a change over the loaded base is written as changed
    changed = msgspec.structs.replace(loaded, workrefs=msgspec.structs.replace(loaded.workrefs, refs=loaded.workrefs.refs.remove(key)))
    again = decode_snapshot(bundle.PROJECTION, encode_snapshot(bundle.PROJECTION, changed))
    assert again is not None and key not in again.state.workrefs.refs and again.state == changed
