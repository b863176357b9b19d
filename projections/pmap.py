"""A small persistent map, so that a fold can return a new state without copying every work item.

A copy-on-write dict costs O(n) per event; with a hundred thousand work items in the log that is
a millisecond an event. PMap spreads keys over a two-level, 64-way tree of small dicts: `set`
copies two 64-slot tuples and one leaf of ~n/4096 entries, and the old map stays valid and
unchanged. Layout depends on `hash()`, which varies between processes, so a map is flattened
to a plain dict for snapshots and rebuilt on load; equality compares contents, never layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar, get_args, get_origin

import msgspec

K = TypeVar("K")
V = TypeVar("V")

_BITS = 6
_FAN = 1 << _BITS
_MASK = _FAN - 1
_EMPTY_TOP: tuple[Any, ...] = (None,) * _FAN


class PMap(Generic[K, V]):
    """An immutable mapping whose `set` returns a new map sharing all but one small leaf."""

    __slots__ = ("_root", "_len")

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        self._root: tuple[Any, ...] = _EMPTY_TOP
        self._len = 0
        if items:
            self._bulk_load(items)

    def _bulk_load(self, items: Mapping[K, V]) -> None:
        # Only used while constructing, before anyone else can see this map.
        top: list[list[dict[K, V] | None] | None] = [None] * _FAN
        for key, value in items.items():
            h = hash(key)
            mid = top[h & _MASK]
            if mid is None:
                mid = top[h & _MASK] = [None] * _FAN
            leaf = mid[(h >> _BITS) & _MASK]
            if leaf is None:
                leaf = mid[(h >> _BITS) & _MASK] = {}
            leaf[key] = value
        self._root = tuple(None if m is None else tuple(m) for m in top)
        self._len = len(items)

    def get(self, key: K, default: Any = None) -> Any:
        """The value of `key`, or `default`."""
        h = hash(key)
        mid = self._root[h & _MASK]
        if mid is None:
            return default
        leaf = mid[(h >> _BITS) & _MASK]
        return default if leaf is None else leaf.get(key, default)

    def set(self, key: K, value: V) -> PMap[K, V]:
        """A new map with `key` bound to `value`."""
        h = hash(key)
        i, j = h & _MASK, (h >> _BITS) & _MASK
        mid = self._root[i] or _EMPTY_TOP
        leaf = mid[j]
        new_leaf = dict(leaf) if leaf else {}
        new_leaf[key] = value
        grown = leaf is None or key not in leaf
        return self._with(i, mid[:j] + (new_leaf,) + mid[j + 1 :], self._len + grown)

    def remove(self, key: K) -> PMap[K, V]:
        """A new map without `key` (the same map when it is absent)."""
        h = hash(key)
        i, j = h & _MASK, (h >> _BITS) & _MASK
        mid = self._root[i]
        leaf = None if mid is None else mid[j]
        if leaf is None or key not in leaf:
            return self
        new_leaf = {k: v for k, v in leaf.items() if k != key} or None
        return self._with(i, mid[:j] + (new_leaf,) + mid[j + 1 :], self._len - 1)

    def _with(self, i: int, mid: tuple[Any, ...], length: int) -> PMap[K, V]:
        new = PMap.__new__(PMap)
        new._root = self._root[:i] + (mid,) + self._root[i + 1 :]
        new._len = length
        return new

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def __getitem__(self, key: K) -> V:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._len

    def items(self) -> Iterator[tuple[K, V]]:
        """Every (key, value), in no particular order."""
        for mid in self._root:
            if mid is not None:
                for leaf in mid:
                    if leaf:
                        yield from leaf.items()

    def keys(self) -> Iterator[K]:
        """Every key, in no particular order."""
        return (k for k, _ in self.items())

    def values(self) -> Iterator[V]:
        """Every value, in no particular order."""
        return (v for _, v in self.items())

    def __iter__(self) -> Iterator[K]:
        return self.keys()

    def to_dict(self) -> dict[K, V]:
        """A plain dict with the same contents."""
        return dict(self.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PMap):
            return NotImplemented
        if self._len != other._len:
            return False
        return all(other.get(k, _MISSING) == v for k, v in self.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PMap({self.to_dict()!r})"


_MISSING: Any = object()


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
