"""A fold's maps as plain dicts while a rebuild folds many events into them, frozen when the state is read.

A write to a persistent map (`PMap.set`) copies the trie's path to the key and wraps the new
trie in a new PMap: ~1 us of a rebuild's CPU for each of the ~2 writes an event. `OpenMap`
(projections/openmap.py) keeps the trie and notes changes beside it, but answers every read in
Python, which for the bundle's small maps cost more than it saved. A `DictMap` is a plain dict
that answers `set` and `remove` the way the folds call them (returning the map, so the fold
functions run unchanged over it) and every read with dict's own C methods. It is written in
place, so the state it was opened from changes too: only a holder that owns the state and hands
it out only frozen (`frozen`) may open one, and each write is noted in a journal, so a fold that
raises half-way is undone (`undo`) to the state before it and folded again the pure way, as if
the maps had never been open.

A bucket map (projections/bucketmap.py: the lineage's batches, the timeline's index) opens the
same way, as one dict of every id: its `set` copies a bucket's dict and builds a bucket, a map
and a trie node per write, where a dict writes one entry; it is frozen by building every bucket
at once (`BucketMap.of`). A packed map of retired ids (projections/packedmap.py) opens its buckets:
a retirement's `added` then writes one dict entry, not a trie node and a map.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from projections.bucketmap import BucketMap
from projections.packedmap import PackedMap
from projections.pmap import PMap

S = TypeVar("S", bound=msgspec.Struct)

_ABSENT: Any = object()  # in the journal: the key was not in the map before the write

# One write undone: (the map, the key, its value before or _ABSENT).
Journal = list[tuple[dict[Any, Any], Any, Any]]


class DictMap(dict[Any, Any]):
    """A plain dict with PMap's writes (`set`, `remove`, returning itself) and `readers`, its writes noted in a journal."""

    __slots__ = ("journal", "freeze")

    def __init__(self, contents: PMap[Any, Any] | BucketMap, journal: Journal) -> None:
        super().__init__(contents.items())
        self.journal = journal
        # What the dict becomes when the state is read: the kind of map it was opened from.
        self.freeze: Callable[[dict[Any, Any]], Any] = type(contents).of if isinstance(contents, BucketMap) else PMap

    def set(self, key: Any, value: Any) -> DictMap:
        """The map with `key` bound to `value` (this map, written in place)."""
        self.journal.append((self, key, self.get(key, _ABSENT)))
        self[key] = value
        return self

    def remove(self, key: Any) -> DictMap:
        """The map without `key` (this map, written in place)."""
        if key in self:
            self.journal.append((self, key, self.pop(key)))
        return self

    def readers(self) -> tuple[Callable[[Any, Any], Any], Callable[[Any], bool]]:
        """See PMap.readers: dict's own `get` and `in`."""
        return self.get, self.__contains__


def journal_of(held: object) -> Journal | None:
    """The journal of an open map (a DictMap), None for any other."""
    return held.journal if type(held) is DictMap else None


def openable(state: msgspec.Struct, fields: tuple[str, ...]) -> bool:
    """Whether the maps `fields` names are PMaps or bucket maps that can be copied into dicts: none holds a snapshot's base.

    A map read from a snapshot decodes its values when they are read (projections/pmap.py); a
    dict of it would decode every one.
    """
    return all(_copyable(getattr(state, name)) for name in fields)


def _copyable(held: object) -> bool:
    if type(held) is PMap:
        return not held._base  # noqa: SLF001
    return isinstance(held, (BucketMap, PackedMap)) and not held.buckets._base  # noqa: SLF001


def opened(state: S, fields: tuple[str, ...], journal: Journal) -> S:
    """`state` with the maps `fields` names copied into DictMaps noting their writes in `journal` (a packed map's buckets)."""
    return msgspec.structs.replace(state, **{name: _opened(getattr(state, name), journal) for name in fields})


def _opened(held: Any, journal: Journal) -> Any:
    if type(held) is PackedMap:
        return PackedMap(buckets=DictMap(held.buckets, journal), count=held.count)  # type: ignore[arg-type]
    return DictMap(held, journal)


def frozen(state: S, fields: tuple[str, ...]) -> S:
    """`state` with the DictMaps among `fields` persistent maps again (the dicts are not written after)."""
    changes = {name: persistent for name in fields if (persistent := _frozen(getattr(state, name))) is not None}
    return msgspec.structs.replace(state, **changes) if changes else state


def _frozen(held: Any) -> Any:
    """The persistent map of an open one, None for a map that is not open."""
    if type(held) is DictMap:
        return held.freeze(held)
    buckets = getattr(held, "buckets", None) if type(held) is PackedMap else None  # typed PMap, open as a DictMap
    if type(buckets) is DictMap:
        return PackedMap(buckets=PMap(buckets), count=held.count)
    return None


def undo(journal: Journal) -> None:
    """Every write the journal notes undone, newest first; the journal left empty."""
    for held, key, before in reversed(journal):
        if before is _ABSENT:
            held.pop(key, None)
        else:
            held[key] = before
    journal.clear()
