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
keeps the persistent maps as before) and closes them whenever the state is read. A fold error
in an open event (`projections.base.fold_errors` moved) undoes that event's writes from their
journal and folds it again over the closed maps, so its recorded anomaly, and every write the
pure fold would or would not have made, are exactly the pure fold's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import msgspec

from eventbus.events import Event
from projections.base import fold_errors
from projections.pmap import PMap

K = TypeVar("K")
V = TypeVar("V")
S = TypeVar("S")

OPENS_AFTER = 64  # events folded with no read between them before the maps are opened
CLOSES_EVERY = 4096  # while open, the maps are closed and opened again this often
_ABSENT: Any = object()  # no change noted for the key
_REMOVED: Any = object()  # the change: the key was removed

# One entry per write of the event being folded: (map, key, its change before, length delta).
Journal = list[tuple["OpenMap[Any, Any]", Any, Any, int]]
# Which fields of a state are maps to open: a field name to None (a PMap) or to the spec of a Struct it holds.
Spec = dict[str, "Spec | None"]


class OpenMap(PMap[K, V]):
    """A PMap whose writes go to a dict of changes over the map it was opened from; only ever inside `Opened`."""

    __slots__ = ("_origin", "_changes", "_journal", "_origin_get", "_origin_has")

    def __init__(self, origin: PMap[K, V], journal: Journal) -> None:
        super().__init__()
        self._origin = origin
        self._changes: dict[K, Any] = {}
        self._journal = journal
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
        grew = int(not self._origin_has(key) if before is _ABSENT else before is _REMOVED)
        changes[key] = value
        self._len += grew
        self._journal.append((self, key, before, grew))
        return self

    def remove(self, key: K) -> PMap[K, V]:
        """This map without `key` (the same object, changed)."""
        if key not in self:
            return self
        changes = self._changes
        self._journal.append((self, key, changes.get(key, _ABSENT), -1))
        changes[key] = _REMOVED
        self._len -= 1
        return self

    def __contains__(self, key: object) -> bool:
        value = self._changes.get(key, _ABSENT)  # type: ignore[arg-type]
        if value is _ABSENT:
            return self._origin_has(key)
        return value is not _REMOVED

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


def undo(journal: Journal) -> None:
    """Take back every write in `journal`, newest first."""
    for opened, key, before, grew in reversed(journal):
        if before is _ABSENT:
            del opened._changes[key]
        else:
            opened._changes[key] = before
        opened._len -= grew
    journal.clear()


def opened(state: S, spec: Spec, journal: Journal) -> S:
    """`state` with the maps `spec` names open, their writes journalled in `journal`."""
    out: S = _swapped(state, spec, lambda held: OpenMap(held, journal) if type(held) is PMap else held)
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

    __slots__ = ("_state", "_fold", "_raw", "_spec", "_journal", "_open", "_unread")

    def __init__(self, state: S, fold: Callable[[S, Event, int], S], spec: Spec) -> None:
        self._state = state
        self._fold = fold
        self._raw: Callable[[S, Event, int], S] = getattr(fold, "__wrapped_fold__", fold)  # errors are caught here
        self._spec = spec
        self._journal: Journal = []
        self._open = False
        self._unread = 0  # events folded since this holder was made or its maps last closed

    def apply(self, event: Event, seq: int) -> None:
        """Fold one event (never raises: the fold is total)."""
        self._unread += 1
        if not self._open:
            self._state = self._fold(self._state, event, seq)
            if self._unread >= OPENS_AFTER:
                self._state, self._open = opened(self._state, self._spec, self._journal), True
            return
        if self._unread % CLOSES_EVERY == 0:  # keeps the dicts of changes, and a whole-map read, small
            self._state = opened(closed(self._state, self._spec), self._spec, self._journal)
        journal = self._journal
        journal.clear()
        errors = fold_errors()
        before = self._state
        try:
            after = self._raw(before, event, seq)
        except Exception:  # noqa: BLE001 - redone below by the total fold, which records it as the pure fold does
            after = None
        if after is not None and fold_errors() == errors:
            self._state = after
            return
        # The fold raised, here or inside (a part's own total fold recorded it): redo the event over
        # the maps as they were before it, with the maps closed, exactly as the pure fold goes.
        undo(journal)
        self._state = self._fold(closed(before, self._spec), event, seq)
        self._open, self._unread = False, 0

    def state(self) -> S:
        """The state after every event folded so far, its maps persistent."""
        return closed(self._state, self._spec) if self._open else self._state
