"""A persistent map, so that a fold can return a new state without copying every work item.

A copy-on-write dict costs O(n) per event; with a hundred thousand work items in the log that is
a millisecond an event. PMap wraps `immutables.Map`, a hash array mapped trie written in C (the
structure behind Python's contextvars): `set` and `remove` copy O(log n) small nodes, whatever the
size of the map, and the old map stays valid and unchanged. The wrapper exists because the C type
cannot be subclassed and the folds' msgspec fields need a generic type (`PMap[str, WorkItem]`) to
encode and decode through the hooks below. Layout depends on `hash()`, which varies between
processes, so a map is flattened to a plain dict for snapshots and, on load, that dict is the base
of a map whose changes go to the trie (`PMap.over`); equality compares contents, never layout.

A snapshot's big maps (batches, transfers, work items: ~15 objects each) are read lazily: the base
holds each value's msgpack (`msgspec.Raw`, one small object pointing into the snapshot's bytes)
and a value is decoded the first time it is read, then kept in the base. Loading a 2M-record
bundle builds a million objects fewer; a fold of the tail reads a few thousand of them, and
anything that goes over every value (items, values, equality, encoding) decodes the rest once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, get_args, get_origin

import immutables
import msgspec

K = TypeVar("K")
V = TypeVar("V")

_EMPTY: immutables.Map[Any, Any] = immutables.Map()
_NO_BASE: dict[Any, Any] = {}
_MISSING: Any = object()
_GONE: Any = object()  # in the overlay: a key of the base that was removed


class PMap(Generic[K, V]):
    """An immutable mapping whose `set` returns a new map sharing all but O(log n) small nodes.

    A map read from a snapshot (`PMap.over`) keeps the plain dict it was decoded as for a base
    and holds its changes in the trie: building the trie of a 70k-item map costs ~0.2 s (a
    bundle snapshot has several), the dict nothing more, and a fold changes a few of its items.
    """

    __slots__ = ("_map", "_base", "_len", "_lazy")

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        self._map: immutables.Map[K, V] = immutables.Map(items) if items else _EMPTY
        self._base: dict[K, V] = _NO_BASE
        self._len = len(self._map)
        self._lazy: _Lazy | None = None

    @staticmethod
    def over(base: dict[K, Any], decode: Callable[[msgspec.Raw], V] | None = None, *, settles: bool = True) -> PMap[K, V]:
        """A map with the contents of `base`, which it takes over: the caller must never change `base` again.

        With `decode`, a value of `base` that is a `msgspec.Raw` stands for `decode(value)`;
        `settles=False` leaves such values to be decoded when read even by `settle` (a map only read by key).
        """
        return PMap._wrap(_EMPTY, base, len(base), None if decode is None else _Lazy(decode, settles))

    @staticmethod
    def _wrap(inner: immutables.Map[K, V], base: dict[K, V], length: int, lazy: _Lazy | None) -> PMap[K, V]:
        new: PMap[K, V] = PMap.__new__(PMap)
        new._map, new._base, new._len, new._lazy = inner, base, length, lazy
        return new

    def _typed(self, key: K, value: Any) -> Any:
        """`value`, read from the base at `key`, decoded (and kept decoded in the base) if it is still msgpack."""
        lazy = self._lazy
        if lazy is None or type(value) is not msgspec.Raw:
            return value
        value = self._base[key] = lazy.decode(value)  # the same value for every map sharing the base
        return value

    def _typed_base(self) -> dict[K, V]:
        """The base with every value decoded: for reads that go over all of it."""
        lazy = self._lazy
        if lazy is not None and not lazy.done:
            base: dict[K, Any] = self._base
            decode = lazy.decode
            for key, value in base.items():
                if type(value) is msgspec.Raw:
                    base[key] = decode(value)  # replacing a value, not adding a key: safe while iterating
            lazy.done = True
        return self._base

    # Folds call get, set and `in` for nearly every event: a map with no base (every map a fold
    # built from the log) answers from the trie alone, whose length is its own.

    def get(self, key: K, default: Any = None) -> Any:
        """The value of `key`, or `default`."""
        if self._base is _NO_BASE:
            return self._map.get(key, default)
        value = self._map.get(key, _MISSING)
        if value is _MISSING:
            value = self._base.get(key, _MISSING)
            return default if value is _MISSING else self._typed(key, value)
        return default if value is _GONE else value

    def set(self, key: K, value: V) -> PMap[K, V]:
        """A new map with `key` bound to `value`."""
        new: PMap[K, V] = PMap.__new__(PMap)
        inner = new._map = self._map.set(key, value)
        new._lazy = self._lazy
        if self._base is _NO_BASE:
            new._base, new._len = _NO_BASE, len(inner)
        else:
            new._base, new._len = self._base, self._len + (key not in self)
        return new

    def readers(self) -> tuple[Callable[[K, Any], Any], Callable[[Any], bool]]:
        """This map's `get` and `in`: the trie's own (C) methods when it has no base, else the map's."""
        if self._base is _NO_BASE:
            return self._map.get, self._map.__contains__
        return self.get, self.__contains__

    def with_changes(self, changes: Mapping[K, Any], removed: object) -> PMap[K, V]:
        """A new map with `changes` written in, a value `removed` removing its key: one mutation of the trie."""
        if self._base is not _NO_BASE:  # the base stays apart: key by key, as a fold would
            out = self
            for key, value in changes.items():
                out = out.remove(key) if value is removed else out.set(key, value)
            return out
        mutation = self._map.mutate()
        for key, value in changes.items():
            if value is removed:
                mutation.pop(key, None)  # a key added and then removed was never in the trie
            else:
                mutation[key] = value
        inner = mutation.finish()
        return PMap._wrap(inner, _NO_BASE, len(inner), self._lazy)

    def remove(self, key: K) -> PMap[K, V]:
        """A new map without `key` (the same map when it is absent)."""
        if key not in self:
            return self
        inner = self._map.set(key, _GONE) if key in self._base else self._map.delete(key)
        return PMap._wrap(inner, self._base, self._len - 1, self._lazy)

    def __contains__(self, key: object) -> bool:
        if self._base is _NO_BASE:
            return key in self._map
        value = self._map.get(key, _MISSING)  # type: ignore[arg-type]
        if value is _MISSING:
            return key in self._base
        return value is not _GONE

    def __getitem__(self, key: K) -> V:
        if self._base is _NO_BASE:
            return self._map[key]
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._len

    def changed_since(self, older: PMap[K, Any]) -> Iterator[K]:
        """The keys bound differently here than in `older` (added, replaced or removed).

        Two maps of one fold share their base, so only the keys either changed over it are
        compared (by identity: an unchanged value is the same object); others compare every key.
        """
        if self._base is older._base:
            old = older._map
            for key, value in self._map.items():
                if old.get(key, _MISSING) is not value:
                    yield key
            yield from (key for key in old if key not in self._map)
            return
        for key, value in self.items():
            if older.get(key, _MISSING) != value:
                yield key
        yield from (key for key in older.keys() if key not in self)

    def items(self) -> Iterator[tuple[K, V]]:
        """Every (key, value), in no particular order."""
        if not self._base:
            return iter(self._map.items())
        return self._merged()

    def _merged(self) -> Iterator[tuple[K, V]]:
        changed = self._map
        for key, value in changed.items():
            if value is not _GONE:
                yield key, value
        for key, value in self._typed_base().items():
            if key not in changed:
                yield key, value

    def keys(self) -> Iterator[K]:
        """Every key, in no particular order; values still held as msgpack stay so (only `items` and `values` decode)."""
        if not self._base:
            return iter(self._map.keys())
        return self._merged_keys()

    def _merged_keys(self) -> Iterator[K]:
        changed = self._map
        for key, value in changed.items():
            if value is not _GONE:
                yield key
        for key in self._base:
            if key not in changed:
                yield key

    def values(self) -> Iterator[V]:
        """Every value, in no particular order."""
        return (value for _, value in self.items())

    def __iter__(self) -> Iterator[K]:
        return self.keys()

    def stored(self) -> dict[K, Any]:
        """A plain dict with the same contents, values still held as msgpack left so: what a snapshot writes.

        msgspec writes a `msgspec.Raw` as its bytes, the very ones the value was read from, so a
        save after a load re-encodes only what changed since, and leaves the maps read by key unread.
        """
        if not self._base:
            return dict(self._map.items())
        plain = dict(self._base)
        for key, value in self._map.items():
            if value is _GONE:
                del plain[key]
            else:
                plain[key] = value
        return plain

    def to_dict(self) -> dict[K, V]:
        """A plain dict with the same contents."""
        if not self._map:
            return dict(self._typed_base())
        return dict(self.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PMap):
            return NotImplemented
        if not self._base and not other._base:
            return self._map == other._map
        return len(self) == len(other) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PMap({self.to_dict()!r})"


class _Lazy:
    """How the values of a base still held as msgpack decode, shared by every map over that base."""

    __slots__ = ("decode", "done", "settles")

    def __init__(self, decode: Callable[[msgspec.Raw], Any], settles: bool = True) -> None:
        self.decode = decode
        self.done = False  # every value of the base decoded: reads over all of it skip the check
        self.settles = settles  # False: `settle` leaves the values as they are (the map is only read by key)


# What a pure function that only reads a map accepts: a plain mapping, or a fold's PMap as it is (no copy).
Lookup = Mapping[K, V] | PMap[K, V]


def enc_hook(obj: Any) -> Any:
    """msgspec msgpack encode hook (snapshots): a PMap goes on the wire as the plain map it is, in key order.

    Values still held as msgpack go as their bytes: for any other encoder use `plain_hook`.
    """
    if isinstance(obj, PMap):
        return in_key_order(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def plain_hook(obj: Any) -> Any:
    """Hook for encoders other than a snapshot's msgpack (`msgspec.to_builtins`, JSON): a PMap as a plain dict, every value decoded.

    `enc_hook` writes a value still held as msgpack as those bytes (`PMap.stored`), which only
    msgpack can carry: to_builtins refuses a `msgspec.Raw`, and JSON would embed it undecoded.
    """
    if isinstance(obj, PMap):
        return obj.to_dict()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def in_key_order(bindings: PMap[Any, Any]) -> dict[Any, Any]:
    """The map as a plain dict whose keys run in sorted order (as they come when keys do not sort).

    A map a fold built iterates in its trie's hash order, so a snapshot wrote neighbouring ids
    (w-000123, w-000124: alike in key and value) far apart, out of deflate's 32 KB window. In key
    order the stored snapshots are smaller by what deflate then finds, and the same state always
    encodes to the same bytes. Readers take any order: a snapshot is decoded into a dict.
    """
    plain = bindings.stored()
    try:
        # Only the keys are sorted: a list of (key, value) pairs is a tracked object per entry,
        # which set the cyclic collector walking the whole state several times per encode.
        keys = sorted(plain)
    except TypeError:  # keys of mixed types that do not compare: the order they came in
        return plain
    return {key: plain[key] for key in keys}


def dec_hook(kind: Any, obj: Any) -> Any:
    """msgspec decode hook: rebuild a `PMap[K, V]` field from its plain map, typing the values."""
    if get_origin(kind) is PMap or kind is PMap:
        key_type, value_type = get_args(kind) or (Any, Any)
        return PMap.over(msgspec.convert(obj, dict[key_type, value_type], dec_hook=dec_hook))  # type: ignore[valid-type]
    raise NotImplementedError(f"cannot decode {kind}")


def settle(value: Any) -> None:
    """Decode now every value still held as msgpack in the maps inside `value` (a state Struct).

    A long-running service calls it in a thread after loading a snapshot, so the first pass over a
    whole map (a plan, a recount) does not decode that map on the event loop; a one-off command
    (`rr replay`) leaves the values to be decoded as they are read.
    """
    if isinstance(value, PMap):
        held = value._lazy
        if held is not None and not held.settles:  # only read by key: each value decoded when read
            return
        if held is not None:  # a lazy map's values hold no map (projections/wire.py): decoding them is all
            value._typed_base()
            return
        for item in value._base.values():
            if isinstance(item, _HOLDERS):  # ints and strings (retired ids' games ...): no call per entry
                settle(item)
        for item in value._map.values():
            if isinstance(item, _HOLDERS):
                settle(item)
    elif isinstance(value, msgspec.Struct):
        for field in value.__struct_fields__:
            settle(getattr(value, field))
    elif isinstance(value, tuple):
        for item in value:
            if isinstance(item, _HOLDERS):
                settle(item)


def decode_all(bindings: PMap[Any, Any]) -> None:
    """Decode now every value of the map still held as msgpack, a map only read by key included (which `settle` leaves)."""
    if bindings._lazy is not None:
        bindings._typed_base()


_HOLDERS = (PMap, msgspec.Struct, tuple)  # what may hold a map with values still held as msgpack
