"""Delta snapshots: what changed in a projection's state since the previous snapshot its writer saved, and applying it.

A full snapshot is the size of the whole fold (the API's bundle: ~23 MB deflated at 5M records,
growing with the log), so within the byte budget a long log can keep only a few dozen; a delta
holds what the N records since the previous snapshot changed (a few hundred KB), so every point
can be kept. Per field of the state Struct: a PMap field as the keys set (with their values) and
the keys removed (`PMap.changed_since`: a compare by identity when both maps are of one fold),
a Struct field holding maps as its own delta, any other field whole; a field that is the same
object in both states is left out.

A delta snapshot is framed like a full one (projections/snapshot.py) with schema `DELTA_SCHEMA`,
so a reader that knows only full snapshots rejects it as another schema instead of misreading
it, and its header's `prev_seq` names the snapshot it applies to: a chain runs from a full
("base") snapshot through deltas each against the one before.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, get_args, get_origin

import msgspec

from projections import pmap as pmap_layout
from projections import wire
from projections.base import Projection
from projections.pmap import PMap, enc_hook
from projections.snapshot import FRAMED, LENGTH, Loaded, SnapshotHeader, split

DELTA_SCHEMA = 2  # a full snapshot's is projections.snapshot.SCHEMA_VERSION

S = TypeVar("S", bound=Any)

# One entry per changed field: [WHOLE, value], [MAP, {key: value set}, [keys removed]], [NESTED, {field: entry}]
WHOLE, MAP, NESTED = 0, 1, 2

Delta = dict[str, list[Any]]

# PMap's layout, read from outside pmap.py (see `_bulk`).
_GONE = pmap_layout._GONE  # noqa: SLF001
_NO_BASE = pmap_layout._NO_BASE  # noqa: SLF001
_GONE_OR_MISSING: Any = object()

_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
_entries = msgspec.msgpack.Decoder(dict[str, list[msgspec.Raw]])
_kind = msgspec.msgpack.Decoder(int)


@functools.cache
def _fields(kind: type[msgspec.Struct]) -> tuple[tuple[str, Any, int], ...]:
    """(name, declared type, how it is diffed) of each field: MAP for a PMap, NESTED for a Struct holding maps, else WHOLE."""
    out = []
    for field in msgspec.structs.fields(kind):
        declared = field.type
        if get_origin(declared) is PMap:
            how = MAP
        elif isinstance(declared, type) and issubclass(declared, msgspec.Struct) and wire.wire_type(declared) != declared:
            how = NESTED
        else:
            how = WHOLE
        out.append((field.name, declared, how))
    return tuple(out)


def diff(older: Any, newer: Any) -> Delta:
    """What turns state `older` into `newer` (two Structs of one type), field by field; unchanged fields left out."""
    delta: Delta = {}
    for name, _, how in _fields(type(newer)):  # type: ignore[arg-type]
        before, after = getattr(older, name), getattr(newer, name)
        if before is after:
            continue
        if how == MAP:
            changed = list(after.changed_since(before))
            put = {key: after[key] for key in changed if key in after}
            removed = [key for key in changed if key not in after]
            if put or removed:
                delta[name] = [MAP, put, removed]
        elif how == NESTED and type(before) is type(after):
            inner = diff(before, after)
            if inner:
                delta[name] = [NESTED, inner]
        else:
            delta[name] = [WHOLE, after]
    return delta


def apply(state: S, delta: Delta) -> S:
    """`state` with `delta` (from `diff`, or decoded, or `composed`) applied."""
    changes: dict[str, Any] = {}
    for name, entry in delta.items():
        changes[name] = _applied(getattr(state, name), entry)
    return msgspec.structs.replace(state, **changes) if changes else state


def _applied(value: Any, entry: list[Any]) -> Any:
    kind = entry[0]
    if kind == WHOLE:
        return entry[1]
    if kind == MAP:
        return _bulk(value, entry[1], entry[2])
    return apply(value, entry[1])


def _bulk(mapping: PMap[Any, Any], put: dict[Any, Any], removed: Iterable[Any]) -> PMap[Any, Any]:
    """`mapping` with the keys of `put` set and `removed` gone, in one mutation of its trie.

    One `set` or `remove` a key builds a PMap and a trie each: ~4 us, so applying a chain's deltas
    key by key cost ~40% of folding the records they stand for. This works on PMap's layout (a trie
    of changes over a plain dict base, a removed base key marked in the trie) from outside pmap.py,
    whose layout another change owns; tests/test_snapshot_delta.py checks it against `set`/`remove`.
    """
    inner, base, length = mapping._map, mapping._base, len(mapping)
    was = inner.get  # the map before: membership read from its trie and base directly (PMap's `in` is ~10x slower)

    def present(key: Any) -> bool:
        value = was(key, _GONE_OR_MISSING)
        return key in base if value is _GONE_OR_MISSING else value is not _GONE

    with inner.mutate() as changing:
        for key, value in put.items():
            length += not present(key)
            changing[key] = value
        for key in dict.fromkeys(removed):  # once each
            if key in put or not present(key):
                continue
            length -= 1
            if key in base:
                changing[key] = _GONE
            else:
                del changing[key]
        changed = changing.finish()
    if base is _NO_BASE:
        length = len(changed)
    return PMap._wrap(changed, base, length, mapping._lazy)


def composed(first: Delta, second: Delta) -> Delta:
    """One delta doing what `first` then `second` do: a chain's deltas are applied once, each key set at most once."""
    out = dict(first)
    for name, entry in second.items():
        earlier = out.get(name)
        if earlier is None or entry[0] == WHOLE:
            out[name] = entry
        elif earlier[0] == WHOLE:
            out[name] = [WHOLE, _applied(earlier[1], entry)]
        elif earlier[0] == MAP and entry[0] == MAP:
            put = {**earlier[1], **entry[1]}
            removed = set(earlier[2]) | set(entry[2])
            for key in entry[1]:
                removed.discard(key)
            for key in entry[2]:
                put.pop(key, None)
            out[name] = [MAP, put, list(removed)]
        elif earlier[0] == NESTED and entry[0] == NESTED:
            out[name] = [NESTED, composed(earlier[1], entry[1])]
        else:
            raise ValueError(f"delta field {name!r}: entries of kinds {earlier[0]} and {entry[0]} do not compose")
    return out


def _decoded(raw: bytes | memoryview | msgspec.Raw, kind: type[msgspec.Struct]) -> Delta:
    """A delta of a `kind` as encoded, typed field by field (raises msgspec.DecodeError / ValidationError)."""
    declared = {name: (field_type, how) for name, field_type, how in _fields(kind)}
    delta: Delta = {}
    for name, entry in _entries.decode(raw).items():
        if name not in declared or not entry:
            raise msgspec.ValidationError(f"delta of {kind.__name__}: no field {name!r} or an empty entry")
        field_type, how = declared[name]
        got = _kind.decode(entry[0])
        if got == WHOLE and len(entry) == 2:
            delta[name] = [WHOLE, wire.decode(entry[1], field_type)]
        elif got == MAP and how == MAP and len(entry) == 3:
            key, value = get_args(field_type)
            delta[name] = [MAP, wire.decode(entry[1], dict[key, value]), wire.decode(entry[2], list[key])]  # type: ignore[valid-type]
        elif got == NESTED and how == NESTED and len(entry) == 2:
            delta[name] = [NESTED, _decoded(entry[1], field_type)]
        else:
            raise msgspec.ValidationError(f"delta of {kind.__name__}.{name}: entry of kind {got} does not fit the field")
    return delta


def encode_delta(projection: Projection[S], older: S, newer: S, taken_at: dt.datetime | None = None) -> bytes:
    """The delta snapshot that turns `older` (a saved snapshot's state) into `newer`."""
    header = SnapshotHeader(schema=DELTA_SCHEMA, projection=projection.name, version=projection.version,
                            last_seq=newer.last_seq, taken_at=taken_at, prev_seq=older.last_seq)
    head = _encoder.encode(header)
    return b"".join((FRAMED, LENGTH.pack(len(head)), head, _encoder.encode(diff(older, newer))))


def is_delta(header: SnapshotHeader) -> bool:
    """Whether a snapshot with this header is a delta."""
    return header.schema == DELTA_SCHEMA


def apply_delta(projection: Projection[S], state: S, data: bytes) -> Loaded[S] | None:
    """`state` moved on by the delta snapshot `data`; None when `data` is no delta of this projection and version
    against `state`'s position, or does not read: the caller then stops its chain at `state`, never at a wrong one."""
    moved, applied = apply_chain(projection, state, [data])
    return moved if applied else None


def apply_chain(projection: Projection[S], state: S, chain: Sequence[bytes | None]) -> tuple[Loaded[S] | None, int]:
    """`state` moved on by the delta snapshots of `chain` in order, composed and applied once, and how many applied.

    The chain stops before the first delta that is missing (None), unreadable or not against the
    position reached: the state returned is the last one the chain reaches whole (None when none applied).
    """
    total: Delta = {}
    header: SnapshotHeader | None = None
    applied, position = 0, state.last_seq
    for data in chain:
        decoded = None if data is None else _one(projection, type(state), position, data)
        if decoded is None:
            break
        try:
            total = composed(total, decoded[1])
        except ValueError:
            break
        header, position, applied = decoded[0], decoded[0].last_seq, applied + 1
    if header is None:
        return None, 0
    try:
        moved = apply(state, total)
    except (TypeError, AttributeError, ValueError, KeyError):
        return None, 0
    if moved.last_seq != header.last_seq:
        return None, 0
    return Loaded(header, moved), applied


def _one(projection: Projection[Any], kind: type[Any], position: int, data: bytes) -> tuple[SnapshotHeader, Delta] | None:
    try:
        header, body = split(data)
    except msgspec.DecodeError:
        return None
    expected = (DELTA_SCHEMA, projection.name, projection.version, position)
    if (header.schema, header.projection, header.version, header.prev_seq) != expected:
        return None
    try:
        return header, _decoded(body, kind)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
