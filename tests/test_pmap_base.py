"""A map read from a snapshot keeps its decoded dict as a base and its changes in the trie, and reads as one map."""

from __future__ import annotations

import gc
import threading

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus.gcpause import paused_gc
from projections import wire
from projections.pmap import PMap, enc_hook

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
