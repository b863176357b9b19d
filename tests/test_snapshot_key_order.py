"""Snapshot maps are written in key order, whatever order the fold left them in, and snapshots in the old order still read."""

from __future__ import annotations

import random
import zlib
from typing import Any

import msgspec
from hypothesis import given

from eventbus import events as ev
from ops.bench.bench_projection import fleet_log
from projections import bundle, wire
from projections.base import fold_events
from projections.pmap import PMap, enc_hook
from projections.snapshot import decode_snapshot, encode_snapshot
from tests.test_projections import LOGS, PROPERTY, numbered
from tests.test_snapshot_wire import SAVED


class _Held(msgspec.Struct, frozen=True):
    items: PMap[str, tuple[str, int]] = msgspec.field(default_factory=PMap)
    by_seq: PMap[int, str] = msgspec.field(default_factory=PMap)


def _folded(keys: list[str]) -> _Held:
    """A state built as a fold builds it: one set per key, in the order given."""
    items: PMap[str, tuple[str, int]] = PMap()
    by_seq: PMap[int, str] = PMap()
    for key in keys:
        number = int(key.split("-")[1])
        items, by_seq = items.set(key, (key, number)), by_seq.set(-number, key)
    return _Held(items=items, by_seq=by_seq)


def _keys_written(data: bytes) -> tuple[list[str], list[int]]:
    plain = msgspec.msgpack.decode(data)  # a dict keeps the order its keys were read in
    return list(plain["items"]), list(plain["by_seq"])


def test_a_folded_map_is_written_in_key_order_not_its_tries_hash_order() -> None:
    keys = [f"w-{i:06d}" for i in range(2_000)]
    random.Random(7).shuffle(keys)
    written, seqs = _keys_written(msgspec.msgpack.encode(_folded(keys), enc_hook=enc_hook))
    assert written == sorted(keys) and seqs == sorted(seqs)


def test_the_same_contents_encode_to_the_same_bytes_whatever_the_history() -> None:
    keys = [f"b-{i:05d}" for i in range(500)]
    shuffled = random.Random(3).sample(keys, len(keys))
    folded = _folded(keys)
    decoded = wire.decode(msgspec.msgpack.encode(_folded(shuffled), enc_hook=enc_hook), _Held)
    # A map over a decoded base with changes in its trie: the base's keys and the trie's interleave.
    changed = msgspec.structs.replace(decoded, items=decoded.items.set("b-00250", ("b-00250", -1)).set("a", ("a", 0)))
    expected = msgspec.structs.replace(folded, items=folded.items.set("b-00250", ("b-00250", -1)).set("a", ("a", 0)))
    assert msgspec.msgpack.encode(changed, enc_hook=enc_hook) == msgspec.msgpack.encode(expected, enc_hook=enc_hook)
    assert _keys_written(msgspec.msgpack.encode(changed, enc_hook=enc_hook))[0] == sorted([*keys, "a"])


def test_keys_that_do_not_compare_are_written_as_they_come() -> None:
    mixed: PMap[Any, int] = PMap({1: 1, "a": 2, (1, 2): 3})
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(mixed, enc_hook=enc_hook)) == {1: 1, "a": 2, (1, 2): 3}


def _hash_order(obj: Any) -> Any:
    if isinstance(obj, PMap):
        return obj.to_dict()  # what the hook wrote before: the trie's order
    raise NotImplementedError(type(obj).__name__)


@PROPERTY
@given(LOGS)
def test_a_snapshot_written_in_the_tries_order_before_still_reads_as_the_same_state(log: list[ev.Event]) -> None:
    for projection in SAVED:
        state = fold_events(projection, numbered(log))
        new = encode_snapshot(projection, state)
        head = new[: len(new) - len(msgspec.msgpack.encode(state, enc_hook=enc_hook))]
        old = head + msgspec.msgpack.encode(state, enc_hook=_hash_order)
        for data in (old, new):
            loaded = decode_snapshot(projection, data)
            assert loaded is not None and loaded.state == state, projection.name


def test_a_bundle_of_many_items_is_stored_smaller_in_key_order() -> None:
    # The saving this order is for: neighbouring ids, alike in key and value, within deflate's window.
    state = fold_events(bundle.PROJECTION, numbered(list(fleet_log(30_000))))
    ordered = zlib.compress(msgspec.msgpack.encode(state, enc_hook=enc_hook), 3)
    hashed = zlib.compress(msgspec.msgpack.encode(state, enc_hook=_hash_order), 3)
    assert len(ordered) < 0.9 * len(hashed), (len(ordered), len(hashed))
