"""A map read from a snapshot keeps its decoded dict as a base and its changes in the trie, and reads as one map."""

from __future__ import annotations

import gc
import threading

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus.gcpause import paused_gc
from projections import wire
from projections.pmap import PMap, enc_hook, settle

KEYS = st.text(alphabet="abcdef", max_size=2)
STEPS = st.lists(st.tuples(st.booleans(), KEYS, st.integers()), max_size=60)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, st.integers(), max_size=30), STEPS)
def test_a_map_over_a_base_behaves_as_the_trie_map_with_the_same_history(base: dict[str, int], steps: list[tuple[bool, str, int]]) -> None:
    over, trie, expected = PMap.over(dict(base)), PMap(base), dict(base)
    versions = [(over, dict(expected))]
    for is_set, key, value in steps:
        if is_set:
            over, trie, expected[key] = over.set(key, value), trie.set(key, value), value
        else:
            over, trie = over.remove(key), trie.remove(key)
            expected.pop(key, None)
        versions.append((over, dict(expected)))
        assert over == trie and trie == over and len(over) == len(expected)
        assert over.to_dict() == expected and dict(over.items()) == expected and sorted(over) == sorted(expected)
        assert all(over[k] == v and k in over and over.get(k) == v for k, v in expected.items())
        assert over.get(key, "none") == expected.get(key, "none") and (key in over) == (key in expected)
    for version, contents in versions:  # every older version is unchanged
        assert version.to_dict() == contents


class _Held(msgspec.Struct, frozen=True):
    items: PMap[str, int] = msgspec.field(default_factory=PMap)


def test_a_decoded_snapshot_map_builds_no_trie() -> None:
    # Building the trie of each decoded map cost more than the decode itself (0.5 s of a 51 MB
    # bundle snapshot): the decoded dict is the map now, and the trie only holds later changes.
    data = msgspec.msgpack.encode(_Held(items=PMap({f"w-{i:06d}": i for i in range(50_000)})), enc_hook=enc_hook)
    gc.collect()
    before = len(gc.get_objects())
    held = wire.decode(data, _Held)
    gc.collect()
    assert len(gc.get_objects()) - before < 100, "the decoded map built a trie of its items"
    changed = held.items.set("w-000001", -1).remove("w-000002")
    assert (changed["w-000001"], "w-000002" in changed, len(changed)) == (-1, False, 49_999)
    assert held.items["w-000001"] == 1 and len(held.items) == 50_000


def test_the_collector_is_paused_until_the_last_concurrent_pause_ends_and_left_as_it_was() -> None:
    entered, release = threading.Barrier(2), threading.Event()

    def pause() -> None:
        with paused_gc():
            entered.wait()
            release.wait(10)

    other = threading.Thread(target=pause)
    with paused_gc():
        other.start()
        entered.wait()
        assert not gc.isenabled()
    assert not gc.isenabled(), "the other thread's pause still runs"
    release.set()
    other.join(10)
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled(), "a collector someone else turned off stays off"
    finally:
        gc.enable()


class _Item(msgspec.Struct, frozen=True):
    n: int
    tags: tuple[str, ...] = ()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, st.integers(-1000, 1000), max_size=30), STEPS, st.sampled_from(["get", "items", "values", "eq"]))
def test_a_map_over_a_base_of_undecoded_values_reads_every_value_typed_and_as_the_eager_map(
        base: dict[str, int], steps: list[tuple[bool, str, int]], first_read: str) -> None:
    raw = msgspec.msgpack.decode(msgspec.msgpack.encode({k: _Item(v, (k,)) for k, v in base.items()}),
                                 type=dict[str, msgspec.Raw])
    lazy = PMap.over(raw, msgspec.msgpack.Decoder(_Item).decode)
    eager, expected = PMap.over({k: _Item(v, (k,)) for k, v in base.items()}), {k: _Item(v, (k,)) for k, v in base.items()}
    first = {"get": lambda m: [m.get(k) for k in sorted(base)], "items": lambda m: list(m.items()),
             "values": lambda m: list(m.values()), "eq": lambda m: m == eager}[first_read]
    first(lazy)
    for is_set, key, value in steps:
        if is_set:
            lazy, eager, expected[key] = lazy.set(key, _Item(value)), eager.set(key, _Item(value)), _Item(value)
        else:
            lazy, eager = lazy.remove(key), eager.remove(key)
            expected.pop(key, None)
        assert all(type(lazy.get(k)) is _Item and lazy[k] == v for k, v in expected.items())
        assert dict(lazy.items()) == expected and lazy == eager and len(lazy) == len(expected)
    assert all(type(v) is _Item for v in lazy.values()) and lazy.to_dict() == expected


def test_a_snapshots_map_of_structs_keeps_its_values_undecoded_until_read() -> None:
    value = _WithItems(items=PMap({"a": _Item(1), "b": _Item(2, ("x",))}))
    decoded = wire.decode(msgspec.msgpack.encode(value, enc_hook=enc_hook), _WithItems)
    assert all(type(v) is msgspec.Raw for v in decoded.items._base.values())  # nothing built yet
    assert decoded.items["b"] == _Item(2, ("x",)) and type(decoded.items._base["a"]) is msgspec.Raw
    assert decoded == value and all(type(v) is _Item for v in decoded.items._base.values())


class _WithItems(msgspec.Struct, frozen=True):
    items: PMap[str, _Item] = msgspec.field(default_factory=PMap)


class _Nested(msgspec.Struct, frozen=True):
    inner: _WithItems = msgspec.field(default_factory=_WithItems)
    by_owner: PMap[str, _WithItems] = msgspec.field(default_factory=PMap)


def test_settling_a_loaded_state_decodes_every_undecoded_value_in_its_maps_however_deep() -> None:
    # What a service does in a thread after loading a snapshot (servicekit/livefold.py), so its
    # first pass over a whole map decodes nothing on the event loop.
    value = _Nested(inner=_WithItems(items=PMap({"a": _Item(1)})),
                    by_owner=PMap({"o": _WithItems(items=PMap({"b": _Item(2, ("x",))}))}))
    decoded = wire.decode(msgspec.msgpack.encode(value, enc_hook=enc_hook), _Nested)
    maps = [decoded.inner.items, decoded.by_owner["o"].items]
    assert all(type(v) is msgspec.Raw for m in maps for v in m._base.values())
    settle(decoded)
    assert all(type(v) is _Item for m in maps for v in m._base.values())
    assert decoded == value
