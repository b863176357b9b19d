"""Decoding a snapshot's state in one typed pass: every PMap field read as the dict it was written as.

A decode hook sees a PMap field only after msgspec has built it as untyped dicts and lists, and
must then convert every item again (`msgspec.convert`): 1.3 s for an 18.9 MB bundle snapshot,
of which the plain decode is 0.4 s. Here each state type gets a mirror Struct (same fields,
names and defaults; `dict[K, V]` where it has `PMap[K, V]`), msgspec decodes straight into it,
and `to_state` wraps the dicts as PMaps (each dict the base of its map, `PMap.over`); Structs
holding no PMap are decoded as they are.

A PMap whose values are Structs (or tuples) holding no PMap is read as `dict[K, msgspec.Raw]`:
each value stays msgpack until the map is asked for it (projections/pmap.py). Building the
values was nearly all of a bundle snapshot's decode (~1.3 us per batch of 13 fields, whatever
the layout: an array-like one halves the bytes and saves ~10%), and a point in time reads few.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Union, get_args, get_origin

import msgspec

from projections.attempts import ItemAttempts
from projections.pmap import PMap
from projections.taint import BatchBucket
from projections.workrefs import RefsBucket

# Values of maps that are only ever read by key (a fold's `get` of the item an event names), never
# gone over whole: a service's `pmap.settle` after a load leaves them as msgpack, each decoded when
# an event first names its item. The attempts of the open and recently completed items are kept by
# three folds (data, models, Elo); before completed items retired (projections/attempts.py) they
# were about a third of a bundle's entries and most of what settling a service's parts cost.
READ_BY_KEY: frozenset[Any] = frozenset({ItemAttempts, BatchBucket, RefsBucket})
# The buckets of the two maps that grow with the log (one entry per batch or item ever made,
# projections/bucketmap.py) are read the same way: the timeline's index is only asked for one id,
# and the lineage's batches are gone over whole only while a quarantine is in force
# (`taint.tainted`, after `taint.decode_lineage` in a thread), when the closure's own pass over them
# is the larger cost. Work's and data's retired ids are packed strings (projections/packedmap.py).

# The same for single fields (state Struct, field name) whose value type other maps share: none
# today (the two it held became bucket maps, above); a field added here is left unsettled.
READ_BY_KEY_FIELDS: frozenset[tuple[type, str]] = frozenset()


@functools.cache
def wire_type(kind: Any) -> Any:
    """`kind` with every `PMap[K, V]` inside it as `dict[K, wire V]`; `kind` itself when it holds no PMap."""
    origin = get_origin(kind)
    if origin is PMap:
        key, value = get_args(kind)
        return dict[wire_type(key), msgspec.Raw if _lazy(value) else wire_type(value)]  # type: ignore[misc]
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return _wire_struct(kind)
    if origin is None:
        return kind
    args = get_args(kind)
    wired: tuple[Any, ...] = tuple(wire_type(a) if a is not Ellipsis else a for a in args)
    if wired == args:
        return kind
    if origin in (Union, types.UnionType):
        return functools.reduce(lambda a, b: a | b, wired)
    return origin[wired]  # tuple[...], list[...], dict[...]


@functools.cache
def _fields(kind: type[msgspec.Struct]) -> tuple[msgspec.structs.FieldInfo, ...]:
    return msgspec.structs.fields(kind)  # resolves annotations: far too slow to ask per value


def _wire_struct(kind: type[msgspec.Struct]) -> Any:
    fields = _fields(kind)
    wired = [(f, wire_type(f.type)) for f in fields]
    if all(w == f.type for f, w in wired):  # equal, not identical: cached aliases are equal copies
        return kind
    config = kind.__struct_config__
    spec = [(f.encode_name, w, _default(f)) for f, w in wired]
    return msgspec.defstruct(f"Wire{kind.__name__}", spec, kw_only=True, array_like=config.array_like,
                             tag=config.tag, tag_field=config.tag_field)


def _default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default_factory is PMap:
        return msgspec.field(default_factory=dict)
    if field.default_factory is not msgspec.NODEFAULT:
        return msgspec.field(default_factory=field.default_factory)
    return field.default if field.default is not msgspec.NODEFAULT else msgspec.field()


def to_state(value: Any, kind: Any, by_key: bool = False) -> Any:
    """The value of type `kind` that the decoded wire value `value` (of `wire_type(kind)`) stands for.

    `by_key`: a map only read by key (READ_BY_KEY_FIELDS), whose values `settle` leaves as msgpack.
    """
    wire = wire_type(kind)
    if wire == kind or value is None:
        return value
    origin = get_origin(kind)
    if origin is PMap:
        _, item = get_args(kind)
        if _lazy(item):  # values decoded when read
            return PMap.over(value, _decoder(item).decode, settles=not by_key and item not in READ_BY_KEY)
        if wire_type(item) == item:
            return PMap.over(value)  # the decoded dict becomes the map's base: no trie to build
        return PMap.over({k: to_state(v, item) for k, v in value.items()})
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return kind(**{f.name: to_state(getattr(value, f.encode_name), f.type, (kind, f.name) in READ_BY_KEY_FIELDS)
                       for f in _fields(kind)})
    if origin in (Union, types.UnionType):
        for option in get_args(kind):
            if option is not type(None) and isinstance(value, _runtime(wire_type(option))):
                return to_state(value, option)
        return value
    if origin in (tuple, list):
        (item, *_) = get_args(kind)
        return origin(to_state(v, item) for v in value)
    if origin is dict:
        _, item = get_args(kind)
        return {k: to_state(v, item) for k, v in value.items()}
    return value


@functools.cache
def _lazy(item: Any) -> bool:
    """Whether a PMap's values of type `item` are left as msgpack until read: Structs and tuples holding no PMap."""
    runtime = get_origin(item) or item
    is_container = runtime is tuple or (isinstance(runtime, type) and issubclass(runtime, msgspec.Struct))
    return is_container and wire_type(item) == item


@functools.cache
def _decoder(item: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(item)


def _runtime(kind: Any) -> type:
    origin = get_origin(kind)
    return typing.cast(type, origin if origin is not None else kind)


def decode(data: bytes | memoryview | msgspec.Raw, kind: Any, by_key: bool = False) -> Any:
    """`data` (msgpack written with projections.pmap.enc_hook) decoded as `kind` in one typed pass.

    `by_key`: `kind` is a map only read by key, as a field of READ_BY_KEY_FIELDS is (see `to_state`).
    """
    return to_state(msgspec.msgpack.decode(data, type=wire_type(kind)), kind, by_key)
