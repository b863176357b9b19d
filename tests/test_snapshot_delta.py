"""A delta snapshot turns the state it was taken against into exactly the later state, chained, over every saved projection."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from eventbus import events as ev
from projections import bundle
from projections.base import Folder, Projection, fold_events
from projections.pmap import PMap
from projections.snapshot import decode_snapshot, encode_snapshot, read_header
from projections.snapshotdelta import DELTA_SCHEMA, _bulk, apply, apply_chain, apply_delta, diff, encode_delta
from tests.test_projections import LOGS, PROPERTY, numbered, records
from tests.test_snapshot_wire import SAVED


def _states_at(projection: Projection[Any], log: list[ev.Event], cuts: list[int], start: Any = None) -> list[Any]:
    """The states of one fold (as a writer holds them) after each cut, in order; from `start` when given."""
    folder, states = Folder(projection, start), []
    recs = records(log)
    done = 0 if start is None else start.last_seq
    for cut in sorted(cuts):
        for record in recs[done:cut]:
            folder(record)
        done = max(done, cut)
        states.append(projection.finished(msgspec.structs.replace(folder.state, last_seq=max(cut, done, 1) if recs else 0)))
    return states


CUTS = st.lists(st.integers(min_value=0, max_value=70), min_size=2, max_size=5)


@PROPERTY
@given(LOGS, CUTS)
def test_a_chain_of_deltas_over_a_base_gives_each_later_state(log: list[ev.Event], cuts: list[int]) -> None:
    for projection in SAVED:
        states = _states_at(projection, log, cuts)
        base = decode_snapshot(projection, encode_snapshot(projection, states[0]))  # lazily decoded maps, another base
        assert base is not None
        state = base.state
        for older, newer in zip(states, states[1:], strict=False):
            assert apply(older, diff(older, newer)) == newer, projection.name
            moved = apply_delta(projection, state, encode_delta(projection, older, newer))
            assert moved is not None and moved.state == newer, projection.name
            assert moved.header.prev_seq == older.last_seq and moved.header.schema == DELTA_SCHEMA
            state = moved.state


@PROPERTY
@given(LOGS, CUTS)
def test_deltas_between_states_folded_on_from_a_lazily_decoded_snapshot_apply(log: list[ev.Event], cuts: list[int]) -> None:
    # A writer that started from a snapshot: its maps are bases of msgpack values decoded when read.
    for projection in SAVED:
        first = _states_at(projection, log, cuts[:1])[0]
        loaded = decode_snapshot(projection, encode_snapshot(projection, first))
        assert loaded is not None
        states = [loaded.state, *_states_at(projection, log, cuts[1:], start=loaded.state)]
        for older, newer in zip(states, states[1:], strict=False):
            moved = apply_delta(projection, older, encode_delta(projection, older, newer))
            assert moved is not None and moved.state == newer, projection.name


@PROPERTY
@given(LOGS, LOGS)
def test_a_delta_between_unrelated_states_of_a_fold_still_gives_the_later_one(first: list[ev.Event], second: list[ev.Event]) -> None:
    # Maps of different folds share no base: every key is compared, the result is the same.
    for projection in SAVED:
        older = fold_events(projection, numbered(first))
        newer = msgspec.structs.replace(fold_events(projection, numbered(second)), last_seq=older.last_seq + len(second) + 1)
        newer = projection.finished(newer)
        moved = apply_delta(projection, older, encode_delta(projection, older, newer))
        assert moved is not None and moved.state == newer, projection.name


def test_an_unchanged_state_gives_an_empty_delta_and_a_delta_against_another_position_is_refused() -> None:
    log = [ev.LeaderElected(role="scheduler", node="n1", epoch=1, source="n1"),
           ev.WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2)]
    state = fold_events(bundle.PROJECTION, numbered(log))
    assert diff(state, state) == {}
    later = msgspec.structs.replace(state, last_seq=5)
    data = encode_delta(bundle.PROJECTION, state, later)
    assert apply_delta(bundle.PROJECTION, later, data) is None  # it applies to the state at 2, not 5
    assert apply_delta(SAVED[1], state, data) is None  # another projection's
    assert decode_snapshot(bundle.PROJECTION, data) is None  # a reader of full snapshots refuses it
    header = read_header(data)
    assert header is not None and header.prev_seq == 2 and header.last_seq == 5
    for broken in (data[: len(data) - 3], b"", data[:12]):
        assert apply_delta(bundle.PROJECTION, state, broken) is None


class _Leaf(msgspec.Struct, frozen=True):
    n: int = 0


class _Part(msgspec.Struct, frozen=True, kw_only=True):
    last_seq: int = 0
    items: PMap[str, _Leaf] = msgspec.field(default_factory=PMap)
    note: str = ""


def test_keys_set_and_removed_travel_and_other_keys_are_left_out() -> None:
    older = _Part(last_seq=1, items=PMap({"a": _Leaf(1), "b": _Leaf(2), "c": _Leaf(3)}))
    newer = msgspec.structs.replace(older, last_seq=2, items=older.items.set("b", _Leaf(20)).remove("c").set("d", _Leaf(4)))
    delta = diff(older, newer)
    assert delta == {"last_seq": [0, 2], "items": [1, {"b": _Leaf(20), "d": _Leaf(4)}, ["c"]]}
    assert apply(older, delta) == newer


@PROPERTY
@given(LOGS, CUTS, st.integers(min_value=0, max_value=4))
def test_a_chain_composed_and_applied_at_once_reaches_each_state_and_stops_before_a_missing_link(
        log: list[ev.Event], cuts: list[int], missing: int) -> None:
    for projection in SAVED:
        states = _states_at(projection, log, cuts)
        deltas: list[bytes | None] = [encode_delta(projection, a, b) for a, b in zip(states, states[1:], strict=False)]
        base = decode_snapshot(projection, encode_snapshot(projection, states[0]))
        assert base is not None
        moved, applied = apply_chain(projection, base.state, deltas)
        assert applied == len(deltas) and (moved.state if moved else base.state) == states[-1], projection.name
        if missing < len(deltas):
            deltas[missing] = None
            moved, applied = apply_chain(projection, base.state, deltas)
            assert applied == missing and (moved.state if moved else base.state) == states[missing], projection.name


KEYS = st.sampled_from("abcdefgh")


@PROPERTY
@given(st.dictionaries(KEYS, st.integers()), st.lists(st.tuples(st.booleans(), KEYS, st.integers()), max_size=12),
       st.dictionaries(KEYS, st.integers()), st.lists(KEYS, max_size=6), st.booleans())
def test_a_bulk_change_of_a_map_equals_setting_and_removing_key_by_key(
        base: dict[str, int], before: list[tuple[bool, str, int]], put: dict[str, int], removed: list[str], over: bool) -> None:
    mapping: PMap[str, int] = PMap.over(dict(base)) if over else PMap(base)
    for remove, key, value in before:  # a trie of changes (and removed base keys) over the base
        mapping = mapping.remove(key) if remove else mapping.set(key, value)
    expected = mapping
    for key, value in put.items():
        expected = expected.set(key, value)
    for key in removed:
        if key not in put:
            expected = expected.remove(key)
    bulk = _bulk(mapping, put, removed)
    assert bulk == expected and len(bulk) == len(expected) and sorted(bulk.keys()) == sorted(expected.keys())
    assert all(bulk.get(key) == expected.get(key) and (key in bulk) == (key in expected) for key in "abcdefgh")
