"""Forensics: what happened to a node, a work item or a model, in log order, each line saying why.

The log is folded alongside (only the subjects its lines depend on: `subjects_read` for a work
item or a model, `node_subjects` then `aggregates_named` for a node), so each selected event is
judged as the projections judged it: a stale leader decision says it was ignored and why, an
illegal transition says it was rejected and why. A work item's timeline also shows what happened
around it: its node going offline while holding it, and leadership changing while it was open.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import msgspec

from eventbus.errors import InvalidEvent
from eventbus.events import Event, HostOffline, HostOnline, LeaderElected, LeaderLost
from eventbus.integrity import decode_on
from eventbus.leasecopy import COPIES
from eventbus.subjects import EVENTS_ROOT, aggregate_filter, source_filter, type_filter
from projections import bundle
from projections.base import Record, type_of, undecodable
from projections.bundle import ProjectionSet, total_anomalies, total_fenced
from projections.sentences import sentence
from projections.work import ACTIVE, TERMINAL


class Selector(msgspec.Struct, frozen=True, kw_only=True):
    """Which events a timeline is about; every filter given must match, none given means everything."""

    node: str | None = None
    work: str | None = None
    model: str | None = None


class TimelineLine(msgspec.Struct, frozen=True, kw_only=True):
    """One event: position, time, type, a sentence, and what the projections made of it."""

    seq: int
    ts: dt.datetime | None
    type: str
    text: str
    note: str = ""  # "" when applied; "IGNORED: ..." or "REJECTED: ..." otherwise

    def render(self) -> str:
        """One line for people: seq, time, type, sentence, note."""
        when = self.ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if self.ts else "-"
        note = f"  -- {self.note}" if self.note else ""
        return f"{self.seq:>8}  {when}  {self.type:<27} {self.text}{note}"


_NODE_FIELDS = ("node", "source", "to_node", "from_node", "previous_node")
_MODEL_FIELDS = ("model_id", "parent_model", "previous_model", "opponent")


# The records a timeline needs beyond its aggregate's own: leadership (fencing and "around"),
# membership ("around"), and the event types elsewhere that name a model (a work item's are
# found through projections/workrefs.py).
_CONTEXT = (f"{EVENTS_ROOT}.leader.>", f"{EVENTS_ROOT}.host.>", COPIES)  # COPIES: the lease copies elections are verified by
LEADERSHIP = (_CONTEXT[0], COPIES)  # what every fence learns from
_NAMING_MODEL = ("SELFPLAY_COMPLETE", "TRAINING_STARTED")


def subjects_read(selector: Selector) -> tuple[str, ...] | None:
    """The subject filters of a work item's or a model's first read: its own subjects and what judges them.

    None means the whole log, or for a node alone two reads (`node_subjects`, then the
    aggregates its records name): a node is named in events of every aggregate. A work item's
    events are judged by the work fold of that item and the leadership fence only, a model's
    by the models fold, so the rest of the log cannot change a line. A work item's timeline
    then reads `work_context`: the membership of its nodes and the aggregates naming it.
    """
    if selector.work is None and selector.model is None:
        return None
    subjects = list(LEADERSHIP)  # leadership and the lease copies that verify it
    if selector.work is not None:
        subjects.append(aggregate_filter("work", selector.work))
    if selector.model is not None:
        subjects += [f"{EVENTS_ROOT}.model.>", *(type_filter(t) for t in _NAMING_MODEL)]
    return tuple(dict.fromkeys(subjects))


def work_context(own: Iterable[Event], naming: Iterable[str]) -> tuple[str, ...]:
    """A work item's second read: the membership of every node its own events name, and the aggregates naming it.

    `own` are the item's own events; `naming` the subject filters of the results, promotions and
    ratings that name it (projections/workrefs.py). Only its nodes' membership can be shown
    around it (`around_work`), and a host's events are judged by that host's history alone.
    """
    nodes = sorted({n for event in own if isinstance(n := getattr(event, "node", None), str) and n})  # item.node's values
    return tuple(dict.fromkeys([*(aggregate_filter("host", n) for n in nodes), *naming]))


# Types that other nodes publish naming a node in a field: an assignment and a copy's plan are
# the leader's, a distribution's summary lists the nodes. The rest are found through what these
# name (`aggregates_named`): a node's work reports relayed by the API through the item, a copy's
# completion published by its sender through the batch of the plan.
_NAMING_NODE = ("WORK_ASSIGNED", "DATA_SYNC_PLANNED", "MODEL_DISTRIBUTION_COMPLETE")

# Fields naming the aggregate whose events judge an event: the folds accept a report, a result,
# a copy or a promotion by the state of that item, batch or model (lists, such as a training's
# batches, change no verdict and are not followed).
_JUDGED_BY = {
    "work": ("work_id", "evaluation_work_id"),
    "data": ("batch_id",),
    "model": ("model_id", "parent_model", "previous_model", "opponent"),
}


def node_subjects(node: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The first read of a node's timeline: its own subjects (what it published, its membership, leadership), and what names a node.

    The records of the second group that do not mention `node` are dropped unfolded; the ones
    that do, and the node's own, lead to the aggregates they are judged by (`aggregates_named`).
    """
    return (source_filter(node), aggregate_filter("host", node), _CONTEXT[0], COPIES), tuple(type_filter(t) for t in _NAMING_NODE)


def aggregates_named(event: Event, kinds: Iterable[str] = ("work", "data", "model")) -> set[str]:
    """Subject filters of the work items, batches and models (of `kinds`) whose events the folds judge `event` by."""
    named = set()
    for aggregate in kinds:
        fields = _JUDGED_BY[aggregate]
        for field in fields:
            value = getattr(event, field, None)
            if isinstance(value, str) and value:
                named.add(aggregate_filter(aggregate, value))
    return named


def mentions_node(event: Event, node: str) -> bool:
    """Whether the event is about, from or to `node`."""
    if any(getattr(event, f, None) == node for f in _NODE_FIELDS):
        return True
    return node in (getattr(event, "nodes", None) or ())


def mentions_work(event: Event, work_id: str) -> bool:
    """Whether the event is about work item `work_id` or produced by it."""
    return getattr(event, "work_id", None) == work_id or getattr(event, "evaluation_work_id", None) == work_id


def mentions_model(event: Event, model_id: str) -> bool:
    """Whether the event is about model `model_id`, its parent, or a game against it."""
    return any(getattr(event, f, None) == model_id for f in _MODEL_FIELDS)


def around_work(event: Event, work_id: str, before: ProjectionSet) -> bool:
    """Whether the event explains what happened to an open work item: its node's membership, leadership."""
    item = before.work.items.get(work_id)
    if item is None or item.status in TERMINAL:
        return False
    if isinstance(event, (HostOffline, HostOnline)):
        return item.status in ACTIVE and item.node == event.node
    return isinstance(event, (LeaderElected, LeaderLost))


def selected(selector: Selector, event: Event, before: ProjectionSet) -> bool:
    """Whether the event belongs in the timeline of `selector`."""
    if selector.node is not None and not mentions_node(event, selector.node):
        return False
    if selector.model is not None and not mentions_model(event, selector.model):
        return False
    if selector.work is not None:
        return mentions_work(event, selector.work) or around_work(event, selector.work, before)
    return True


def verdict(before: ProjectionSet, after: ProjectionSet, seq: int) -> str:
    """What the projections made of the event at `seq`: '' when applied, else ignored or rejected, and why."""
    if total_fenced(after) > total_fenced(before):
        reasons = {
            d.reason
            for part in (after.cluster, after.work, after.models, after.data)
            for d in part.fence.last_dropped
            if d.seq == seq
        }
        return "IGNORED: " + "; ".join(sorted(reasons))
    if total_anomalies(after) > total_anomalies(before):
        parts = (after.cluster, after.work, after.models, after.data, after.elo, after)
        reasons = {a.reason for part in parts for a in part.anomalies if a.seq == seq}
        return "REJECTED: " + "; ".join(sorted(reasons))
    return ""


class TimelineBuilder:
    """Folds every record and keeps a line for each selected one; usable as a replay callback."""

    def __init__(self, selector: Selector, state: ProjectionSet | None = None) -> None:
        """`state`: the fold's state before the first record given (default: before sequence 1)."""
        self.selector = selector
        self.state = ProjectionSet() if state is None else state
        self.lines: list[TimelineLine] = []

    def __call__(self, record: Record) -> None:
        """Fold one stored record, and keep its line when it is selected."""
        try:
            event = decode_on(record.subject, record.data, record.headers)
        except InvalidEvent as exc:
            self.state = undecodable(self.state, record.seq, type_of(record.subject), str(exc))
            if self.selector == Selector():
                self.lines.append(TimelineLine(seq=record.seq, ts=None, type=type_of(record.subject) or "?",
                                               text=f"undecodable message on {record.subject}", note=f"REJECTED: {exc}"))
            return
        self.add(record.seq, event)

    def add(self, seq: int, event: Event) -> None:
        """Fold one decoded event, and keep its line when it is selected."""
        before = self.state
        self.state = bundle.apply(before, event, seq)
        if selected(self.selector, event, before):
            self.lines.append(
                TimelineLine(seq=seq, ts=event.ts, type=event.type_name(), text=sentence(event),
                             note=verdict(before, self.state, seq))
            )


def timeline(events: Iterable[tuple[int, Event]], selector: Selector) -> list[TimelineLine]:
    """The lines of `selector`'s timeline over decoded (seq, event) pairs in log order."""
    builder = TimelineBuilder(selector)
    for seq, event in events:
        builder.add(seq, event)
    return builder.lines
