"""A persistent map, so that a fold can return a new state without copying every work item.

A copy-on-write dict costs O(n) per event; with a hundred thousand work items in the log that is
a millisecond an event. PMap wraps `immutables.Map`, a hash array mapped trie written in C (the
structure behind Python's contextvars): `set` and `remove` copy O(log n) small nodes, whatever the
size of the map, and the old map stays valid and unchanged. The wrapper exists because the C type
cannot be subclassed and the folds' msgspec fields need a generic type (`PMap[str, WorkItem]`) to
encode and decode through the hooks below. Layout depends on `hash()`, which varies between
processes, so a map is flattened to a plain dict for snapshots and rebuilt on load; equality
compares contents, never layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar, get_args, get_origin

import immutables
import msgspec

K = TypeVar("K")
V = TypeVar("V")

_EMPTY: immutables.Map[Any, Any] = immutables.Map()


class PMap(Generic[K, V]):
    """An immutable mapping whose `set` returns a new map sharing all but O(log n) small nodes."""

    __slots__ = ("_map",)

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        self._map: immutables.Map[K, V] = immutables.Map(items) if items else _EMPTY

    @staticmethod
    def _wrap(inner: immutables.Map[K, V]) -> PMap[K, V]:
        new: PMap[K, V] = PMap.__new__(PMap)
        new._map = inner
        return new

    def get(self, key: K, default: Any = None) -> Any:
        """The value of `key`, or `default`."""
        return self._map.get(key, default)

    def set(self, key: K, value: V) -> PMap[K, V]:
        """A new map with `key` bound to `value`."""
        return PMap._wrap(self._map.set(key, value))

    def remove(self, key: K) -> PMap[K, V]:
        """A new map without `key` (the same map when it is absent)."""
        if key not in self._map:
            return self
        return PMap._wrap(self._map.delete(key))

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __getitem__(self, key: K) -> V:
        return self._map[key]

    def __len__(self) -> int:
        return len(self._map)

    def items(self) -> Iterator[tuple[K, V]]:
        """Every (key, value), in no particular order."""
        return iter(self._map.items())

    def keys(self) -> Iterator[K]:
        """Every key, in no particular order."""
        return iter(self._map.keys())

    def values(self) -> Iterator[V]:
        """Every value, in no particular order."""
        return iter(self._map.values())

    def __iter__(self) -> Iterator[K]:
        return iter(self._map)

    def to_dict(self) -> dict[K, V]:
        """A plain dict with the same contents."""
        return dict(self._map.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PMap):
            return NotImplemented
        return self._map == other._map

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PMap({self.to_dict()!r})"


# What a pure function that only reads a map accepts: a plain mapping, or a fold's PMap as it is (no copy).
Lookup = Mapping[K, V] | PMap[K, V]


def enc_hook(obj: Any) -> Any:
    """msgspec encode hook: a PMap goes on the wire as the plain map it is."""
    if isinstance(obj, PMap):
        return obj.to_dict()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def dec_hook(kind: Any, obj: Any) -> Any:
    """msgspec decode hook: rebuild a `PMap[K, V]` field from its plain map, typing the values."""
    if get_origin(kind) is PMap or kind is PMap:
        key_type, value_type = get_args(kind) or (Any, Any)
        return PMap(msgspec.convert(obj, dict[key_type, value_type], dec_hook=dec_hook))  # type: ignore[valid-type]
    raise NotImplementedError(f"cannot decode {kind}")
