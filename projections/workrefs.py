"""Which other aggregates' records name each work item: the index that makes `rr timeline --work` a filtered read.

A work item's own events live under `rr.evt.work.<id>.>`, but its results do not: a selfplay
batch is `rr.evt.data.<batch>.SELFPLAY_COMPLETE.*`, a candidate and its evaluation
`rr.evt.model.<m>.*`, and a promotion or rating names the evaluation that decided it. No subject
filter can find "the records whose body names w-1"; this fold remembers, per work item, the
aggregates whose subjects hold them (a few dozen bytes per item that produced something), so
the timeline reads those aggregates' subjects instead of every result in the log. It is a part
of the bundle and the API saves it on its own too, so a timeline loads it without the bundle.
"""

from __future__ import annotations

import msgspec

from eventbus.events import EvaluationComplete, Event, ModelPromoted, ModelRated, SelfplayComplete, TrainingComplete
from eventbus.subjects import aggregate_filter
from projections.base import Anomaly, Projection, total
from projections.bucketmap import BucketMap
from projections.pmap import PMap

# 2: the refs in hash buckets (projections/bucketmap.py), not a map entry each
VERSION = 2
# The per-item entries' and their position's own format (servicekit/workrefentries.py): unchanged
# by how the fold holds its index, so a reader keeps its entries while the fold is rebuilt.
ENTRIES_VERSION = 1

# The result types and the field naming the work item whose timeline shows them.
NAMING: dict[str, str] = {
    SelfplayComplete.type_name(): "work_id",
    TrainingComplete.type_name(): "work_id",
    EvaluationComplete.type_name(): "work_id",
    ModelPromoted.type_name(): "evaluation_work_id",
    ModelRated.type_name(): "evaluation_work_id",
}


class RefsBucket(msgspec.Struct, frozen=True):
    """The items whose ids hash to one bucket of `RefsMap`."""

    entries: dict[str, tuple[str, ...]] = {}


class RefsMap(BucketMap, frozen=True, array_like=True):
    """Work id -> subject filters: read by key, a bucket decoded at a time (a timeline asks for one item)."""

    buckets: PMap[int, RefsBucket] = msgspec.field(default_factory=PMap)
    bucket = RefsBucket


class WorkRefs(msgspec.Struct, frozen=True, kw_only=True):
    """Per work item, the subject filters of the aggregates whose records name it (in first-seen order)."""

    last_seq: int = 0
    refs: RefsMap = msgspec.field(default_factory=RefsMap)
    anomalies: tuple[Anomaly, ...] = ()  # nothing is refused here; kept for the State protocol
    anomaly_count: int = 0


def named_work(event: Event) -> str | None:
    """The work item a result names (its own or the evaluation it rests on), None when it names none."""
    field = NAMING.get(event.type_name())
    value = getattr(event, field, None) if field is not None else None
    return value if isinstance(value, str) and value else None


@total
def apply(state: WorkRefs, event: Event, seq: int) -> WorkRefs:
    """The index after one result: the result's aggregate is remembered for the item it names."""
    work_id = named_work(event)
    if work_id is None:
        return msgspec.structs.replace(state, last_seq=seq)
    subject = aggregate_filter(event.aggregate, event.aggregate_id())
    known = state.refs.get(work_id, ())
    if subject in known:
        return msgspec.structs.replace(state, last_seq=seq)
    return msgspec.structs.replace(state, last_seq=seq, refs=state.refs.set(work_id, (*known, subject)))


def may_name(data: bytes, work_id: str) -> bool:
    """Whether a result's JSON body can name `work_id`: False only when its bytes cannot hold that string value.

    A body without escapes holds every string value verbatim between quotes, as our encoder writes
    it; one with any escape is left to the decoder (an id that needs escaping puts one in every body
    naming it). A reader after one item's refs folds only the results this lets through, not the
    thousands naming other items.
    """
    return msgspec.json.encode(work_id) in data or b"\\" in data


def subjects_naming(state: WorkRefs, work_id: str) -> tuple[str, ...]:
    """The subject filters holding every record beyond its own that names `work_id`."""
    return tuple(state.refs.get(work_id, ()))


# The index is also kept one entry per work item (servicekit/workrefentries.py), so that a
# timeline reads its item's entry instead of the whole index.


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One work item's refs as the index had them at `as_of` (unchanged since, while no newer entry replaced it)."""

    as_of: int
    subjects: tuple[str, ...] = ()


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """Every item whose refs changed up to `last_seq` has its entry written (as of then or later)."""

    last_seq: int
    version: int = ENTRIES_VERSION
    # The kept `timeline-cluster` snapshots' positions when it was written: a timeline's start
    # chosen without listing the snapshot bucket (one it finds pruned since makes it list).
    starts: tuple[int, ...] = ()


def changed_entries(state: WorkRefs, written: WorkRefs | None) -> list[tuple[str, Entry]]:
    """The entries to write for `state` after `written` was: the items whose refs changed (all of them when None)."""
    changed = state.refs.keys() if written is None else state.refs.changed_since(written.refs)
    return [(work_id, Entry(as_of=state.last_seq, subjects=tuple(state.refs.get(work_id, ())))) for work_id in changed]


def from_entry(work_id: str, position: Position, entry: Entry | None) -> WorkRefs:
    """The index as far as it concerns `work_id` at `position`, from its entry (or its absence).

    Writers write every changed item's entry before the position, and never replace an entry or
    the position with an older one (servicekit/workrefentries.py), so the entry stands for the
    position; one from a writer ahead of it may hold more, which the records after it re-add.
    """
    refs = RefsMap.of({work_id: entry.subjects}) if entry is not None and entry.subjects else RefsMap()
    return WorkRefs(last_seq=position.last_seq, refs=refs)


def newer_entry(ours: Entry, stored: Entry) -> bool:
    """Whether `ours` may replace `stored`: it was written at a later position."""
    return ours.as_of > stored.as_of


# The maps the bundle's rebuild may hold as plain dicts (projections/dictmap.py, the bundle's open set): the
# fold reads `refs` by key and writes it by `set` alone, never reading a map of a state it replaced.
DICT_MAPS = ("refs",)

PROJECTION: Projection[WorkRefs] = Projection(
    name="workrefs",
    version=VERSION,
    initial=WorkRefs,
    apply=apply,
    reads=frozenset(NAMING),
)
