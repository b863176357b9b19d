"""The lineage's batches and the timeline's index in hash buckets: maps like dicts, loaded a bucket at a time."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections import taint, wire, workrefs
from projections.pmap import enc_hook
from projections.workrefs import RefsMap
from tests.test_projections import PROPERTY

pytestmark = pytest.mark.pure

IDS = st.text(alphabet="ab-1\t\n\\", max_size=6)
SUBJECTS = st.tuples(st.text(alphabet="rs.>", max_size=4))
# A step: bind an id to subjects, or remove it (None).
STEPS = st.lists(st.tuples(IDS, st.none() | SUBJECTS), max_size=60)


def _applied(steps: list[tuple[str, tuple[str, ...] | None]]) -> tuple[RefsMap, dict[str, tuple[str, ...]]]:
    refs, plain = RefsMap(), dict[str, tuple[str, ...]]()
    for key, value in steps:
        if value is None:
            refs = refs.remove(key)
            plain.pop(key, None)
        else:
            refs = refs.set(key, value)
            plain[key] = value
    return refs, plain


@PROPERTY
@given(STEPS, st.lists(IDS, max_size=10))
def test_a_bucket_map_answers_as_the_dict_of_its_steps(steps: list[tuple[str, tuple[str, ...] | None]], probes: list[str]) -> None:
    refs, plain = _applied(steps)
    assert len(refs) == len(plain) and refs.to_dict() == plain and sorted(refs.keys()) == sorted(plain)
    assert refs == RefsMap.of(plain)  # the same contents by another history: equal, as a rebuild must be
    for key in [*plain, *probes]:
        assert refs.get(key) == plain.get(key) and (key in refs) == (key in plain)
    assert all(bucket.entries for bucket in refs.buckets.values())  # an emptied bucket is dropped, not kept empty


@PROPERTY
@given(STEPS, STEPS)
def test_changed_since_names_exactly_the_ids_bound_differently(first: list[tuple[str, tuple[str, ...] | None]],
                                                               then: list[tuple[str, tuple[str, ...] | None]]) -> None:
    older, before = _applied(first)
    newer, after = _applied(first + then)
    expected = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert set(newer.changed_since(older)) == expected
    loaded = _reloaded(older)  # a loaded map shares no base with the fold's: compared by value
    assert set(newer.changed_since(loaded)) == expected and set(loaded.changed_since(older)) == set()


def _reloaded(refs: RefsMap) -> RefsMap:
    loaded: RefsMap = wire.decode(msgspec.msgpack.encode(refs, enc_hook=enc_hook), RefsMap)
    return loaded


def test_a_loaded_map_decodes_only_the_bucket_a_lookup_hashes_to() -> None:
    facts = {f"b-{i}": taint.BatchFacts(node=f"n-{i % 7}", model_id=f"m-{i % 3}") for i in range(20_000)}
    saved = taint.BatchFactsMap.of(facts)
    loaded: taint.BatchFactsMap = wire.decode(msgspec.msgpack.encode(saved, enc_hook=enc_hook), taint.BatchFactsMap)
    held: dict[int, Any] = loaded.buckets._base
    assert len(held) == len(saved.buckets) > 4_000 and all(type(v) is msgspec.Raw for v in held.values())
    assert loaded.get("b-1234") == facts["b-1234"] and "b-99999" not in loaded and len(loaded) == 20_000
    assert sum(type(v) is not msgspec.Raw for v in held.values()) <= 2  # b-1234's bucket, and b-99999's if another
    grown = loaded.set("b-20000", taint.BatchFacts(node="n-0"))
    assert len(grown) == 20_001 and grown.get("b-20000") == taint.BatchFacts(node="n-0") and "b-20000" not in loaded
    assert loaded == saved and grown.to_dict() == {**facts, "b-20000": taint.BatchFacts(node="n-0")}


def test_the_entries_keep_their_version_when_the_index_is_held_otherwise() -> None:
    # The index's version 2 changed only its snapshot's shape: the entries and the position written
    # by version 1 still stand for it, so a timeline reads them while the API's fold is rebuilt.
    assert workrefs.VERSION == 2 and workrefs.Position(last_seq=1).version == workrefs.ENTRIES_VERSION == 1
