"""`rr timeline [--node N] [--work ID] [--model M]`: what happened, in log order, one sentence per event with why."""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence

import msgspec

from cli.commands import open_bus
from cli.commands.status import progress_on_stderr
from cli.nouns import summary
from eventbus import contextread, directreads
from eventbus.connection import Bus
from eventbus.errors import InvalidEvent
from eventbus.events import EVENT_TYPES, Event
from eventbus.history import Record, last_sequence, replay
from eventbus.integrity import decode_on
from eventbus.subjects import EVENTS_ROOT, aggregate_filter
from projections import timelinestart, workrefs
from projections.base import Folder
from projections.bundle import ProjectionSet
from projections.timeline import (
    LEADERSHIP,
    Selector,
    TimelineBuilder,
    TimelineLine,
    aggregates_named,
    mentions_node,
    mentions_work,
    node_subjects,
    subjects_read,
    work_context,
)
from projections.timelinestart import start_state
from projections.work import is_open
from projections.workrefs import Position
from servicekit import workrefentries
from servicekit.keptlisting import KeptListing, load_listed
from servicekit.options import add_common_arguments, common_options
from servicekit.snapshotting import Listing, load_state, newest_listed
from servicekit.workrefentries import position_or_none


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr timeline`."""
    parser = subparsers.add_parser(
        "timeline", help=summary("timeline")
    )
    parser.add_argument("--node", help="events about, from or to this node")
    parser.add_argument("--work", metavar="ID", help="the life of this work item, and what happened around it")
    parser.add_argument("--model", metavar="M", help="events about this model (training, evaluations, promotion, copies)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line: seq, ts, type, text, note")
    add_common_arguments(parser)
    parser.set_defaults(func=run)


async def build(bus: Bus, selector: Selector) -> list[TimelineLine]:
    """Fold the subjects the selector needs and return its lines."""
    return (await read_timeline(bus, selector))[0]


async def read_timeline(bus: Bus, selector: Selector) -> tuple[list[TimelineLine], int]:
    """The selector's lines and how many records were read for them (a record two filters match counts twice)."""
    builder = TimelineBuilder(selector)
    subjects = subjects_read(selector)
    if subjects is None and selector.node is None:
        count = await replay(bus, _counted(builder))
        return builder.lines, count
    if selector.work is not None and selector.model is None:
        return await _work_timeline(bus, selector, selector.work)
    end = await last_sequence(bus)
    if subjects is None:
        assert selector.node is not None
        records, read = await _node_records(bus, selector.node, end)
    else:
        if selector.work is None:
            records, read = await _read_each(bus, subjects, end)
        else:
            own = _read_each(bus, subjects, end)  # a model adds type filters: one at a time
            (records, read), (refs, read_refs) = await asyncio.gather(own, work_refs(bus, end))
            read += read_refs + await _work_context(bus, selector.work, refs, records, end)
    for seq in sorted(records):
        builder(records[seq])
    return builder.lines, read


async def _work_timeline(bus: Bus, selector: Selector, work_id: str) -> tuple[list[TimelineLine], int]:
    """A work item's lines and how many records were read for them.

    Its own records and those naming it come first (an aggregate each: batched direct gets,
    `eventbus/directreads.py`, cheap from any sequence).
    Leadership and its nodes' membership are spread over the whole log, so the server loads every
    message block between their records: they are read only from the newest kept cluster snapshot
    before the first of those records, and up to the last record about the item, past which they
    add lines only while the item is still open (`around_work`). The item's own records decide
    that snapshot and the nodes, so the snapshot and then that context up to its own last record
    are read while the index's entry (which finds the records naming it) is. The entries' position
    (servicekit/workrefentries.py), read while the log's end is asked for, also says which cluster
    snapshots are kept; the snapshot bucket is listed (once) only without it or when a snapshot it
    names is gone. What the records naming it add to that range is read after them.
    """
    listing = KeptListing(bus)
    try:
        async with asyncio.TaskGroup() as tasks:
            ending, positioning = tasks.create_task(last_sequence(bus)), tasks.create_task(position_or_none(bus))
            own_task = tasks.create_task(_own_and_around(bus, work_id, ending, positioning, listing))
            named_task = tasks.create_task(_naming(bus, work_id, ending, positioning, listing))
    except ExceptionGroup as group:
        raise group.exceptions[0] from None  # a BusError, as the other reads raise it
    end, mine, (named, read_named) = ending.result(), own_task.result(), named_task.result()
    own, start = mine.records, mine.start
    records = {**named, **own}
    first = min(records, default=end + 1)
    if first < min(own, default=end + 1):  # a record naming it before its own first (or it has none): start there
        start = await timeline_start(bus, first - 1, listing, positioning.result())
    about = [seq for seq, r in records.items() if seq in own or ((e := _decoded(r)) is not None and mentions_work(e, work_id))]
    last = max(about, default=end)
    builder = TimelineBuilder(selector, start)
    context, read_context = await _read_beyond(bus, mine, builder.state.last_seq + 1, last)
    for seq in sorted(records.keys() | context.keys()):
        builder(records[seq] if seq in records else context[seq])
    if last < end and is_open(builder.state.work.items.get(work_id)):  # `around_work` may show what follows
        later, read_later = await _read_context(bus, mine.around, last + 1, end)
        read_context += read_later
        for seq in sorted(later.keys() - records.keys()):
            builder(later[seq])
    return builder.lines, mine.read + read_named + read_context


# How far past its own last record an item's context is read before the records naming it are
# known: its results and the promotion or rating naming an evaluation usually follow within a
# few hundred records; reading leadership and membership that much further costs the server
# little (the same message blocks), where a second read for them costs two round trips.
AFTER_OWN = 1_000


class _OwnRead(msgspec.Struct, frozen=True, kw_only=True):
    """A work item's own records, its timeline's start before them, and its context read so far."""

    records: dict[int, Record]
    start: ProjectionSet | None
    around: tuple[str, ...]  # leadership and its nodes' membership: the context's filters
    context: dict[int, Record]  # what `around` matched over `covered`
    covered: tuple[int, int]  # (first, last) sequence of the range read for `context`; first > last: none
    read: int  # records read for `records` and `context`


async def _own_and_around(bus: Bus, work_id: str, ending: Awaitable[int], positioning: Awaitable[Position | None],
                          listing: KeptListing) -> _OwnRead:
    """The item's own records, the timeline's start before the first of them, and the context from there to its last.

    The own records are asked at once, not after the log's end (what lies past it is dropped).
    The kept cluster snapshot the start will come from is known from the position without
    loading it, so the context after it is read while it loads; should another load (that one
    unreadable), `_read_beyond` reads what the range then lacks.
    """
    mine = await directreads.read_aggregate(bus, aggregate_filter("work", work_id), 1, UNBOUNDED)
    end = await ending
    own, read = {r.seq: r for r in mine if r.seq <= end}, len(mine)
    bound, position = min(own, default=end + 1) - 1, await positioning
    around = (*LEADERSHIP, *work_context((e for _, r in sorted(own.items()) if (e := _decoded(r)) is not None), ()))
    last = min(end, max(own, default=-AFTER_OWN) + AFTER_OWN)
    expected = kept_start(position, bound)
    if expected is None:  # the position cannot say which: load it first, then read after it
        start = await timeline_start(bus, bound, listing, position)
        covered = ((start.last_seq if start is not None else 0) + 1, last)
        context, read_context = await _read_context(bus, around, *covered)
    else:
        covered = (expected + 1, last)
        start, (context, read_context) = await asyncio.gather(timeline_start(bus, bound, listing, position),
                                                             _read_context(bus, around, *covered))
    return _OwnRead(records=own, start=start, around=around, context=context, covered=covered, read=read + read_context)


UNBOUNDED = 2**63 - 1  # a read to whatever the log holds when the server answers (no round trip for the end first)


def kept_start(position: Position | None, bound: int) -> int | None:
    """The kept cluster snapshot a timeline whose first record is past `bound` starts from, as the position names them.

    As `timeline_start` chooses while that snapshot loads. 0: none (the timeline folds from the
    log's start); None: the position cannot say (it names none, or none before a `bound` past it).
    """
    if bound < 1:
        return 0
    if position is None or not position.starts:
        return None
    below = [seq for seq in position.starts if seq <= bound]
    if below:
        return max(below)
    return 0 if bound <= position.last_seq else None  # none kept that far back; past it, the listing decides


async def _read_beyond(bus: Bus, mine: _OwnRead, first: int, last: int) -> tuple[dict[int, Record], int]:
    """The context from `first` to `last`: what `mine` read of it, and the rest read now; how many records were read now."""
    low, high = mine.covered
    if low > high:  # nothing read yet
        return await _read_context(bus, mine.around, first, last)
    (before, read_before), (after, read_after) = await asyncio.gather(
        _read_context(bus, mine.around, first, min(last, low - 1)), _read_context(bus, mine.around, max(first, high + 1), last))
    inside = {seq: r for seq, r in mine.context.items() if first <= seq <= last}
    return {**before, **inside, **after}, read_before + read_after


async def _naming(bus: Bus, work_id: str, ending: Awaitable[int], positioning: Awaitable[Position | None],
                  listing: KeptListing) -> tuple[dict[int, Record], int]:
    """The records of the aggregates the index says name the item, and how many records were read for them.

    The index's entry for the item (servicekit/workrefentries.py: two direct gets, whatever the
    number of items), the subjects it names read beside the results after it; without one, the
    index's snapshot and the results after it (`_refs_from_snapshot`), then the subjects.
    """
    found = await workrefentries.entry_beside(bus, work_id, positioning)
    if found is None:
        end = await ending
        refs, read = await _refs_from_snapshot(bus, work_id, end, await listing.get())
        named, read_named = await directreads.read_aggregates(bus, workrefs.subjects_naming(refs, work_id), 1, end)
        return named, read + read_named
    # The subjects the entry names are read beside the results after it; those add a subject rarely.
    known = workrefs.subjects_naming(found, work_id)
    end = await ending
    (tail, read), (named, read_named) = await asyncio.gather(
        _refs_tail(bus, found.last_seq + 1, end), directreads.read_aggregates(bus, known, 1, end))
    more = [s for s in workrefs.subjects_naming(_refs_folded(found, tail, work_id), work_id) if s not in known]
    if more:
        named_more, read_more = await directreads.read_aggregates(bus, more, 1, end)
        named, read_named = {**named, **named_more}, read_named + read_more
    return named, read + read_named


async def _refs_from_snapshot(bus: Bus, work_id: str, end: int, listed: Listing) -> tuple[workrefs.WorkRefs, int]:
    """The index for `work_id` from its newest snapshot and the results after it, and how many records were read.

    The listing says where the index's newest snapshot ends, so the results after it are read
    while it loads; should another snapshot load instead (that one unreadable, or none listed),
    the results after the one loaded are read then.
    """
    newest = newest_listed(listed, workrefs.PROJECTION, end)
    loading = load_listed(bus, workrefs.PROJECTION, "timeline", listed, not_after_seq=end)
    if newest:
        loaded, (tail, read) = await asyncio.gather(loading, _refs_tail(bus, newest + 1, end))
    else:  # none listed: whatever `load_state` finds decides where the results are read from
        loaded, tail, read = await loading, [], 0
    snapshot = loaded.state if loaded is not None else workrefs.PROJECTION.initial()
    if snapshot.last_seq != newest or not newest:
        tail, read_again = await _refs_tail(bus, snapshot.last_seq + 1, end)
        read += read_again
    return _refs_folded(snapshot, tail, work_id), read


async def timeline_start(bus: Bus, bound: int, listing: KeptListing | None = None,
                         position: Position | None = None) -> ProjectionSet | None:
    """The fold state of a work item's timeline at the newest usable cluster snapshot not past `bound`; None: none.

    `position`: the work-ref entries' position, whose `starts` name the cluster snapshots kept
    when it was written; the bucket is listed only when they cannot say (none named, a bound
    past it, or the ones named pruned since).
    """
    if bound < 1:
        return None
    cluster = timelinestart.PROJECTION
    if position is not None and position.starts:
        known = sorted(position.starts)
        if known[0] > bound and bound <= position.last_seq:  # none was kept that far back
            return None
        loaded = await load_listed(bus, cluster, "timeline", {(cluster.name, cluster.version): known}, not_after_seq=bound)
        if loaded is not None:
            return start_state(loaded.state)
    listed = await (listing or KeptListing(bus)).get()
    loaded = await load_listed(bus, cluster, "timeline", listed, not_after_seq=bound)
    return None if loaded is None else start_state(loaded.state)


async def _read_each(bus: Bus, subjects: Iterable[str], end: int, *, together: bool = False,
                     start_seq: int = 1) -> tuple[dict[int, Record], int]:
    records: dict[int, Record] = {}  # by sequence: a record may match two filters
    if together:  # aggregates' own filters (a literal id, then >): cheap for the server, so concurrently
        counts = await asyncio.gather(*(replay(bus, _into(records), subject=subject, start_seq=start_seq, end_seq=end)
                                        for subject in subjects))
        return records, sum(counts)
    read = 0
    for subject in subjects:  # wildcard type filters cost the server a match over many subjects: one at a time
        read += await replay(bus, _into(records), subject=subject, start_seq=start_seq, end_seq=end)
    return records, read


async def _work_context(bus: Bus, work_id: str, refs: workrefs.WorkRefs, records: dict[int, Record], end: int) -> int:
    """Add to `records` the item's nodes' membership and the records of other aggregates naming it; returns how many were read."""
    own = [e for r in records.values() if r.subject.startswith(f"{EVENTS_ROOT}.work.") and (e := _decoded(r)) is not None]
    more, read_more = await _read_each(bus, work_context(own, workrefs.subjects_naming(refs, work_id)), end, together=True)
    for seq, record in more.items():
        records.setdefault(seq, record)
    return read_more


async def work_refs(bus: Bus, end: int) -> tuple[workrefs.WorkRefs, int]:
    """The index of what names each work item, at `end`: its newest snapshot plus the results after it (a filtered read)."""
    loaded = await load_state(bus, workrefs.PROJECTION, "timeline", not_after_seq=end)
    return await _refs_after(bus, loaded.state if loaded is not None else workrefs.PROJECTION.initial(), end)


async def _refs_after(bus: Bus, state: workrefs.WorkRefs, end: int) -> tuple[workrefs.WorkRefs, int]:
    """The index `state` folded on with the results after it up to `end`, and how many records were read."""
    tail, read = await _refs_tail(bus, state.last_seq + 1, end)
    return _refs_folded(state, tail, None), read


async def _refs_tail(bus: Bus, start: int, end: int) -> tuple[list[Record], int]:
    """The results the index folds from `start` to `end`, in log order, and how many were read."""
    if end < start:  # entries written past the log's end this call reads to
        return [], 0
    filters = [typed_filter(kind) for kind in sorted(workrefs.PROJECTION.reads)]
    records: list[Record] = []
    read = await _read_filters(bus, records.append, filters, start, end)
    return sorted(records, key=lambda r: r.seq), read


def _refs_folded(state: workrefs.WorkRefs, tail: Iterable[Record], work_id: str | None) -> workrefs.WorkRefs:
    """The index `state` after the `tail` records past it; with `work_id`, only those that may name it are folded.

    That item's refs come out the same either way; others' are left behind (most of a snapshot
    interval's results name other items, and each costs a decode and a fold).
    """
    folder = Folder(workrefs.PROJECTION, state)
    for record in tail:
        if record.seq > state.last_seq and (work_id is None or workrefs.may_name(record.data, work_id)):
            folder(record)
    return folder.state


# Up to this many records (~10k past a snapshot), what the server does for a range read depends
# on the filters' shape. Measured at 400k records under load, server CPU per read: the item's
# context (leadership, lease copies, a node's membership: `<aggregate>.>` filters) over 15k
# records costs 34-44 ms in one consumer with all its filters against 77-83 ms for one consumer
# each (wall 59-78 against 230-254 ms); the index's tail (five type filters, wildcards inside)
# costs 17-22 ms one consumer each against 56-58 ms in one (at 1M records over the last 500: 2
# against 41 ms, the one consumer's several type filters matched over the subject index when it
# is made). Over a longer range (an item open to the log's end, an index snapshot far back or
# none), one consumer with several filters
# matches every record of the range (4 s against 0.1 s at 300k records), and five type filters
# created at once timed out JetStream's consumer info at 2M records under load: one consumer per
# filter there, the type filters one at a time.
SCAN_MAX_RECORDS = 50_000


async def _read_filters(bus: Bus, on_record: Callable[[Record], object], filters: Sequence[str], start: int,
                        end: int) -> int:
    """Records matching any of the type `filters` from `start` to `end`; returns how many were read."""
    if end - start < SCAN_MAX_RECORDS:
        counts = await asyncio.gather(*(replay(bus, on_record, subject=subject, start_seq=start, end_seq=end)
                                        for subject in filters))
        return sum(counts)
    read = 0
    for subject in filters:  # wildcard type filters cost the server a match over many subjects: one at a time
        read += await replay(bus, on_record, subject=subject, start_seq=start, end_seq=end)
    return read


async def _read_range(bus: Bus, filters: Sequence[str], start: int, end: int) -> tuple[dict[int, Record], int]:
    """Records matching the aggregates' `filters` (which must not overlap) from `start` to `end`, by sequence, and how many were read."""
    if end < start:
        return {}, 0
    if end - start < SCAN_MAX_RECORDS:
        records: dict[int, Record] = {}
        return records, await replay(bus, _into(records), subjects=filters, start_seq=start, end_seq=end)
    return await _read_each(bus, filters, end, together=True, start_seq=start)


async def _read_context(bus: Bus, filters: Sequence[str], start: int, end: int) -> tuple[dict[int, Record], int]:
    """`_read_range` of a work item's context: from RR_CONTEXT, whose copies are all it reads (eventbus/contextread.py)."""
    return await contextread.read(bus, filters, start, end, functools.partial(_read_range, bus))


def typed_filter(type_name: str) -> str:
    """The subject filter of one event type under its own aggregate, e.g. rr.evt.data.*.SELFPLAY_COMPLETE.*."""
    return f"{EVENTS_ROOT}.{EVENT_TYPES[type_name].aggregate}.*.{type_name}.*"


def _into(records: dict[int, Record]) -> Callable[[Record], None]:
    def keep(record: Record) -> None:
        records.setdefault(record.seq, record)

    return keep


# Aggregate filters read by one consumer: each is a few dozen bytes of the create request.
_FILTERS_PER_READ = 500


async def _node_records(bus: Bus, node: str, end: int) -> tuple[dict[int, Record], int]:
    """What a node's timeline folds: its own subjects and leadership, the records naming it, and what judges them.

    The records that mention the node lead to every work item, batch and model they name; the
    records read for those lead on to batches and models only (the lineage a copy or a
    promotion is judged by), not to other nodes' work items, which a node's timeline would
    otherwise pull in whole through the trainer's copies of every batch.
    """
    own, naming = node_subjects(node)
    kept, read_own = await _read_each(bus, own, end)
    others, read_naming = await _read_each(bus, naming, end)
    count = read_own + read_naming
    for seq, record in others.items():
        event = _decoded(record)
        if event is not None and mentions_node(event, node):
            kept.setdefault(seq, record)
    named: set[str] = set()
    for record in kept.values():
        event = _decoded(record)
        if event is not None and mentions_node(event, node):
            named |= aggregates_named(event)
    read: set[str] = set()
    while named - read:
        batch = sorted(named - read)
        read |= named
        for start in range(0, len(batch), _FILTERS_PER_READ):
            found: dict[int, Record] = {}
            count += await replay(bus, _into(found), subjects=batch[start:start + _FILTERS_PER_READ], end_seq=end)
            for seq, record in found.items():
                if kept.setdefault(seq, record) is record and (event := _decoded(record)) is not None:
                    named |= aggregates_named(event, _ALL if mentions_node(event, node) else _LINEAGE)
    return kept, count


_ALL, _LINEAGE = ("work", "data", "model"), ("data", "model")


def _decoded(record: Record) -> Event | None:
    try:
        return decode_on(record.subject, record.data, record.headers)
    except InvalidEvent:
        return None


def _counted(fold: Callable[[Record], None]) -> Callable[[Record], None]:
    count = 0

    def on_record(record: Record) -> None:
        nonlocal count
        fold(record)
        count += 1
        if count % 100_000 == 0:
            progress_on_stderr(count)

    return on_record


def render(lines: list[TimelineLine], as_json: bool) -> str:
    """The timeline as text lines or JSON lines."""
    if as_json:
        return "\n".join(msgspec.json.encode(line).decode() for line in lines)
    return "\n".join(line.render() for line in lines)


def run(args: argparse.Namespace) -> int:
    """Print the timeline; exit 1 when a filter matched nothing (an unknown id, most likely)."""
    options = common_options(args)
    selector = Selector(node=args.node, work=args.work, model=args.model)

    async def go() -> list[TimelineLine]:
        async with open_bus(options, "timeline") as bus:
            return await build(bus, selector)

    lines = asyncio.run(go())
    if not lines:
        print(f"rr: no events match {_describe(selector)}", file=sys.stderr)
        return 1 if selector != Selector() else 0
    print(render(lines, args.json))
    return 0


def _describe(selector: Selector) -> str:
    parts = [f"{name} {value}" for name, value in msgspec.structs.asdict(selector).items() if value is not None]
    return " and ".join(parts) or "(the log is empty)"
