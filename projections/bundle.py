"""All projections folded together from one event stream: what `rr status` and forensics read."""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from eventbus import events as ev
from eventbus.events import EVENT_TYPES, Event
from projections import cluster, data, dictmap, elo, fence, models, setstep, taint, work, workrefs
from projections.base import Anomaly, Projection, Record, failed, fold_events, fold_records, total
from projections.reportruns import ReportRuns

PARTS: dict[str, Projection[Any]] = {
    "cluster": cluster.PROJECTION,
    "work": work.PROJECTION,
    "models": models.PROJECTION,
    "data": data.PROJECTION,
    "elo": elo.PROJECTION,
    "taint": taint.PROJECTION,
    "workrefs": workrefs.PROJECTION,
}

# The parts the node and leader services keep (the distributor and sync agents, the distribution
# and sync loops): the API saves each beside the bundle, at its position and under the part's own
# name, so such a service loads only its parts (about half of the bundle's bytes) and never
# fetches, inflates or decodes the rest (the work items, Elo and the timeline's index).
SERVICE_PARTS = ("cluster", "models", "data", "taint")


class ProjectionSet(msgspec.Struct, frozen=True, kw_only=True):
    """Every projection at the same stream position `last_seq`."""

    last_seq: int = 0
    last_ts: dt.datetime | None = None  # time of the newest event folded: "as of when" for a past sequence
    cluster: cluster.ClusterState = msgspec.field(default_factory=cluster.ClusterState)
    work: work.WorkState = msgspec.field(default_factory=work.WorkState)
    models: models.ModelsState = msgspec.field(default_factory=models.ModelsState)
    data: data.DataState = msgspec.field(default_factory=data.DataState)
    elo: elo.EloState = msgspec.field(default_factory=elo.EloState)
    taint: taint.TaintState = msgspec.field(default_factory=taint.TaintState)
    workrefs: workrefs.WorkRefs = msgspec.field(default_factory=workrefs.WorkRefs)
    anomalies: tuple[Anomaly, ...] = ()  # only undecodable messages; each part keeps its own
    anomaly_count: int = 0


# Event type name -> the parts that read it, so each event is handed only to those.
_ROUTES: dict[str, tuple[tuple[str, Callable[..., msgspec.Struct]], ...]] = {}
for _name, _part in PARTS.items():
    for _type in _part.reads:
        _ROUTES[_type] = _ROUTES.get(_type, ()) + ((_name, _part.apply),)


@total
def apply(state: ProjectionSet, event: Event, seq: int) -> ProjectionSet:
    """Every projection after one event; parts that do not read it only move their position at the end."""
    changes: dict[str, object] = {name: fold(getattr(state, name), event, seq) for name, fold in _ROUTES.get(event.type_name(), ())}
    return msgspec.structs.replace(state, last_seq=seq, last_ts=event.ts or state.last_ts, **changes)


def part_name(projection: Projection[Any]) -> str | None:
    """The field of ProjectionSet that holds `projection` (same name and version), None for any other."""
    for name, part in PARTS.items():
        if part.name == projection.name and part.version == projection.version:
            return name
    return None


def saved_parts(names: Sequence[str] = SERVICE_PARTS) -> list[tuple[Projection[Any], Callable[[ProjectionSet], Any]]]:
    """Each named part's projection and how to take it from the set: what is saved beside the bundle."""
    return [(PARTS[name], operator.attrgetter(name)) for name in names]


def believing(state: ProjectionSet, candidates: Sequence[str]) -> ProjectionSet:
    """The set with every fenced part believing elections of these candidates only (empty: any node's)."""
    changes = {name: fence.believing(getattr(state, name), candidates)
               for name in PARTS if hasattr(getattr(state, name), "fence")}
    return msgspec.structs.replace(state, **changes)


def aligned(state: ProjectionSet) -> ProjectionSet:
    """The set with every part's `last_seq` equal to the set's (parts skip events they do not read)."""
    seq = state.last_seq
    changes = {name: msgspec.structs.replace(getattr(state, name), last_seq=seq) for name in PARTS if getattr(state, name).last_seq != seq}
    return msgspec.structs.replace(state, **changes) if changes else state


# The same routes by event class: a folding set looks each event up without asking its type's name.
_ROUTES_BY_KIND = {EVENT_TYPES[name]: routes for name, routes in _ROUTES.items()}
# And with each part's fold unwrapped from `total`: the folding set catches a part's error itself,
# as `total` would, one call less per part and event.
_RAW_ROUTES_BY_KIND = {
    kind: tuple((name, getattr(fold, "__wrapped_fold__")) for name, fold in routes)  # noqa: B009 - set by `total`, untyped
    for kind, routes in _ROUTES_BY_KIND.items()
}


_RAW_FOLDS = {name: getattr(part.apply, "__wrapped_fold__") for name, part in PARTS.items()}  # noqa: B009 - as above

# The work events read by several parts go through one step for all of them (projections/setstep.py).
assert all(setstep.FOLDED[kind] == {name for name, _ in _ROUTES_BY_KIND[kind]} for kind in setstep.STEPS), \
    "setstep.STEPS must fold every part that reads its types"


def _part_folded(parts: dict[str, Any], name: str, event: Event, seq: int) -> None:
    """One part after one event by its own fold; what `total` does on an error: recorded as its anomaly.

    A step that declined or raised may have written the part's open maps: undone first.
    """
    journal = _journal(parts, name)
    if journal:
        dictmap.undo(journal)
    try:
        parts[name] = _RAW_FOLDS[name](parts[name], event, seq)
    except Exception as exc:  # noqa: BLE001 - folding goes on
        if journal is not None:
            dictmap.undo(journal)
        parts[name] = failed(parts[name], seq, event, exc)


# The parts whose maps a rebuild holds as plain dicts while the set is held open (projections/dictmap.py),
# and which maps: each fold reads them by key or `readers`, writes them only by `set` and `remove`, and
# never reads a map of a state it has replaced by a write (the condition `data.OPEN_MAPS` states).
OPEN_PARTS: dict[str, tuple[str, ...]] = {
    "data": data.OPEN_MAPS, "work": work.DICT_MAPS, "taint": taint.DICT_MAPS, "workrefs": workrefs.DICT_MAPS,
}


def _journal(parts: dict[str, Any], name: str) -> dictmap.Journal | None:
    """The journal of the part's open maps (`_OpenSet`), None while they are persistent."""
    fields = OPEN_PARTS.get(name)
    return None if fields is None else dictmap.journal_of(getattr(parts[name], fields[0]))


_STEPS = setstep.STEPS  # by event class: a module global, read once per event


# While the set is held open, the maps OPEN_PARTS names become plain dicts (projections/dictmap.py)
# once this many events were folded unread and a part's maps hold at most OPEN_ENTRIES_PER_EVENT
# entries per such event: copying them in, and freezing them when the set is read, then costs a
# bounded amount per event folded, so a live reader that reads the set every few events never opens them.
DICTS_AFTER = 1024  # a power of two: tested as a mask
OPEN_ENTRIES_PER_EVENT = 4


class _OpenSet:
    """A ProjectionSet held apart while many events are folded (Folder): each event goes to the
    parts that read it, and the set is built once when read, not once per event as `apply` does."""

    __slots__ = ("_set", "_parts", "_seq", "_ts", "_journals", "_unread")

    def __init__(self, state: ProjectionSet) -> None:
        self._set = state
        self._parts: dict[str, Any] = {name: getattr(state, name) for name in PARTS}
        self._seq = state.last_seq
        self._ts = state.last_ts
        setstep.shared(self._parts)
        # Per part in OPEN_PARTS, its writes in the current event while its maps are dicts: a part's
        # failing fold undoes its own writes alone, never another part's of the same event.
        self._journals: dict[str, dictmap.Journal] = {name: [] for name in OPEN_PARTS}
        self._unread = 0

    def apply(self, event: Event, seq: int) -> None:
        """What `apply` does, part by part (each part's fold is total), a work event in one step for its parts."""
        parts = self._parts
        for journal in self._journals.values():
            journal.clear()  # an event's fold undoes only its own writes
        step = _STEPS.get(type(event))
        if step is not None:
            step(parts, event, seq, _part_folded)
        else:
            for name, fold in _RAW_ROUTES_BY_KIND.get(type(event), ()):
                try:
                    parts[name] = fold(parts[name], event, seq)
                except Exception as exc:  # noqa: BLE001 - what `total` does: recorded as the part's anomaly, folding goes on
                    part_journal = self._journals.get(name)
                    if part_journal is not None:
                        dictmap.undo(part_journal)
                    parts[name] = failed(parts[name], seq, event, exc)
        self._seq = seq
        self._ts = event.ts or self._ts
        self._unread += 1
        if not self._unread & (DICTS_AFTER - 1):
            self._open_maps()

    def _open_maps(self) -> None:
        for name, fields in OPEN_PARTS.items():
            held = self._parts[name]
            if _journal(self._parts, name) is not None or not dictmap.openable(held, fields):
                continue
            if sum(len(getattr(held, field)) for field in fields) <= OPEN_ENTRIES_PER_EVENT * self._unread:
                self._parts[name] = dictmap.opened(held, fields, self._journals[name])

    def state(self) -> ProjectionSet:
        """The set after every event folded so far, every map persistent."""
        parts = {**self._parts, **{name: dictmap.frozen(self._parts[name], fields) for name, fields in OPEN_PARTS.items()}}
        return msgspec.structs.replace(self._set, last_seq=self._seq, last_ts=self._ts, **parts)

    def work(self) -> work.WorkState:
        """The work part as folded so far."""
        state: work.WorkState = self._parts["work"]
        return state


# ReportRuns folds only the last of a run of progress reports: right while the work part is their only reader.
assert [name for name, _ in _ROUTES[ev.WorkProgress.type_name()]] == ["work"], "bundle.folding must follow the routes"


def folding(state: ProjectionSet) -> ReportRuns[ProjectionSet]:
    """`state` held open for folding many events (Folder): each part apart, an attempt's reports in a row as one."""
    held = _OpenSet(state)
    return ReportRuns(held, held.work)


VERSION = sum(part.version * 1000**i for i, part in enumerate(PARTS.values()))

PROJECTION: Projection[ProjectionSet] = Projection(
    name="all",
    version=VERSION,
    initial=ProjectionSet,
    apply=apply,
    reads=frozenset(_ROUTES),
    finish=aligned,
    folding=folding,
)


def fold_all(records: Iterable[Record], state: ProjectionSet | None = None) -> ProjectionSet:
    """Every projection folded from stored records (stream order), each part at the same position."""
    return fold_records(PROJECTION, records, state)


def fold_all_events(events: Iterable[tuple[int, Event]], state: ProjectionSet | None = None) -> ProjectionSet:
    """Every projection folded from decoded (seq, event) pairs."""
    return fold_events(PROJECTION, events, state)


def total_anomalies(state: ProjectionSet) -> int:
    """Anomalies recorded by every part, undecodable messages included."""
    return state.anomaly_count + sum(int(getattr(state, name).anomaly_count) for name in PARTS)


def total_fenced(state: ProjectionSet) -> int:
    """Stale leader decisions dropped by every part that fences."""
    return sum(getattr(state, name).fence.dropped for name in PARTS if hasattr(getattr(state, name), "fence"))
