"""Persistent maps held open while a rebuild folds many events into them, closed when the state is read.

A fold writes its maps through `PMap.set`, which copies the trie's path to the key (three or
four nodes of up to 32 slots in a map of 20k items) and frees the old path: ~2 us a write, two
or three writes an event, most of a rebuild's fold time. A state nobody reads between two events
needs none of those intermediate maps. `OpenMap` stands in for a map while it is open: a write
goes to a plain dict of changes over the map it was opened from and returns the same object, and
`closed` writes the changes into the trie once (`immutables`' mutation, in place). The folds run
unchanged over it: they only `get`, `set`, `remove` and test keys, and a read of the whole map
(iteration, length, equality) sees the changes merged.

The folds stay pure from the outside: `Opened` holds the state, opens the maps only after
`OPENS_AFTER` events without a read (a live follower that reads the state after most events
keeps the persistent maps as before) and closes them whenever the state is read. The maps it
opened from are never changed, so a fold error in an open event (`projections.base.FOLD_ERRORS`
moved) is answered by folding the events since the maps were opened (at most `CLOSES_EVERY`)
and that event again the pure way from them: its recorded anomaly, and every write the pure
fold would or would not have made, are exactly the pure fold's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import msgspec

from eventbus.events import Event
from projections.base import FOLD_ERRORS
from projections.pmap import PMap

K = TypeVar("K")
V = TypeVar("V")
S = TypeVar("S")

OPENS_AFTER = 64  # events folded with no read between them before the maps are opened
CLOSES_EVERY = 4096  # while open, the maps are closed and opened again this often
_ABSENT: Any = object()  # no change noted for the key
_REMOVED: Any = object()  # the change: the key was removed

# Which fields of a state are maps to open: a field name to None (a PMap) or to the spec of a Struct it holds.
Spec = dict[str, "Spec | None"]


class OpenMap(PMap[K, V]):
    """A PMap whose writes go to a dict of changes over the map it was opened from; only ever inside `Opened`."""

    __slots__ = ("_origin", "_changes", "_origin_get", "_origin_has")

    def __init__(self, origin: PMap[K, V]) -> None:
        super().__init__()
        self._origin = origin  # never changed: what a failed event's redo starts from (`Opened`)
        self._changes: dict[K, Any] = {}
        self._len = len(origin)
        self._origin_get, self._origin_has = origin.readers()  # a read the changes miss costs one C call

    def get(self, key: K, default: Any = None) -> Any:
        """The value of `key`, or `default`."""
        value = self._changes.get(key, _ABSENT)
        if value is _ABSENT:
            return self._origin_get(key, default)
        return default if value is _REMOVED else value

    def set(self, key: K, value: V) -> PMap[K, V]:
        """This map with `key` bound to `value` (the same object, changed)."""
        changes = self._changes
        before = changes.get(key, _ABSENT)
        if before is _ABSENT:
            if not self._origin_has(key):
                self._len += 1
        elif before is _REMOVED:
            self._len += 1
        changes[key] = value
        return self

    def remove(self, key: K) -> PMap[K, V]:
        """This map without `key` (the same object, changed)."""
        if key not in self:
            return self
        self._changes[key] = _REMOVED
        self._len -= 1
        return self

    def __contains__(self, key: object) -> bool:
        value = self._changes.get(key, _ABSENT)  # type: ignore[arg-type]
        if value is _ABSENT:
            return self._origin_has(key)
        return value is not _REMOVED

    def readers(self) -> tuple[Callable[[K, Any], Any], Callable[[Any], bool]]:
        """This map's own `get` and `in` (its trie is not where its contents are)."""
        return self.get, self.__contains__

    def __getitem__(self, key: K) -> V:
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._len

    def closed(self) -> PMap[K, V]:
        """The persistent map with every change written in (the map opened from when there is none)."""
        origin, changes = self._origin, self._changes
        return origin.with_changes(changes, _REMOVED) if changes else origin

    # Reads of the whole map: rare in a fold (a retirement's long stride); they see it closed.
    def changed_since(self, older: PMap[K, Any]) -> Iterator[K]:
        """See PMap.changed_since."""
        return self.closed().changed_since(older)

    def items(self) -> Iterator[tuple[K, V]]:
        """See PMap.items."""
        return self.closed().items()

    def keys(self) -> Iterator[K]:
        """See PMap.keys."""
        return self.closed().keys()

    def stored(self) -> dict[K, Any]:
        """See PMap.stored."""
        return self.closed().stored()

    def to_dict(self) -> dict[K, V]:
        """See PMap.to_dict."""
        return self.closed().to_dict()

    def __eq__(self, other: object) -> bool:
        return self.closed() == (other.closed() if isinstance(other, OpenMap) else other)

    __hash__ = None


def opened(state: S, spec: Spec) -> S:
    """`state` with the maps `spec` names open."""
    out: S = _swapped(state, spec, lambda held: OpenMap(held) if type(held) is PMap else held)
    return out


def closed(state: S, spec: Spec) -> S:
    """`state` with the maps `spec` names closed: persistent maps again, whatever the fold put there."""
    out: S = _swapped(state, spec, lambda held: held.closed() if type(held) is OpenMap else held)
    return out


def _swapped(state: Any, spec: Spec, swap: Callable[[Any], Any]) -> Any:
    changes = {name: swap(getattr(state, name)) if inner is None else _swapped(getattr(state, name), inner, swap)
               for name, inner in spec.items()}
    return msgspec.structs.replace(state, **changes)


class Opened(Generic[S]):
    """A fold's state with its maps held open while events are folded and no one reads it (`Projection.folding`).

    `fold` is the projection's total fold; `state()` equals what folding each event with it gives.
    """

    __slots__ = ("_state", "_fold", "_raw", "_spec", "_opened_from", "_since", "_unread")

    def __init__(self, state: S, fold: Callable[[S, Event, int], S], spec: Spec) -> None:
        self._state = state
        self._fold = fold
        self._raw: Callable[[S, Event, int], S] = getattr(fold, "__wrapped_fold__", fold)  # errors are caught here
        self._spec = spec
        self._opened_from: S | None = None  # while open: the state, maps persistent, the maps were opened from
        self._since: list[tuple[Event, int]] = []  # while open: the events folded since then
        self._unread = 0  # events folded since this holder was made or its maps last opened

    def apply(self, event: Event, seq: int) -> None:
        """Fold one event (never raises: the fold is total)."""
        self._unread += 1
        if self._opened_from is None:
            self._state = self._fold(self._state, event, seq)
            if self._unread >= OPENS_AFTER:
                self._reopen(self._state)
            return
        if self._unread >= CLOSES_EVERY:  # keeps the dicts of changes, a whole-map read and a redo small
            self._reopen(closed(self._state, self._spec))
        errors = FOLD_ERRORS[0]
        try:
            after = self._raw(self._state, event, seq)
        except Exception:  # noqa: BLE001 - redone below by the total fold, which records it as the pure fold does
            after = None
        if after is not None and FOLD_ERRORS[0] == errors:
            self._state = after
            self._since.append((event, seq))
            return
        # The fold raised, here or inside (a part's own total fold recorded it), after writing who knows
        # what into the open maps: from the state they were opened from, every event since and this
        # one are folded the pure way, as if the maps had never been open.
        self._state = redone(self._opened_from, self._since, self._fold)
        self._state = self._fold(self._state, event, seq)
        self._opened_from, self._since, self._unread = None, [], 0

    def _reopen(self, state: S) -> None:
        self._opened_from, self._since, self._unread = state, [], 0
        self._state = opened(state, self._spec)

    def peek(self) -> S:
        """The state after every event folded so far, its maps possibly open: for a look that only reads."""
        return self._state

    def state(self) -> S:
        """The state after every event folded so far, its maps persistent."""
        return self._state if self._opened_from is None else closed(self._state, self._spec)


def redone(state: Any, events: list[tuple[Event, int]], fold: Callable[[Any, Event, int], Any]) -> Any:
    """`state` after `events` folded by `fold` the pure way."""
    for event, seq in events:
        state = fold(state, event, seq)
    return state
