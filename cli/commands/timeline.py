"""`rr timeline [--node N] [--work ID] [--model M]`: what happened, in log order, one sentence per event with why."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterable

import msgspec

from cli.commands import open_bus
from cli.commands.status import progress_on_stderr
from eventbus.connection import Bus
from eventbus.errors import InvalidEvent
from eventbus.events import Event
from eventbus.history import Record, last_sequence, replay
from eventbus.integrity import decode_on
from projections.timeline import (
    Selector,
    TimelineBuilder,
    TimelineLine,
    aggregates_named,
    mentions_node,
    node_subjects,
    subjects_read,
)
from servicekit.options import add_common_arguments, common_options


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr timeline`."""
    parser = subparsers.add_parser(
        "timeline", help="what happened to a node, work item or model, in order, with reasons"
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
    end = await last_sequence(bus)
    if subjects is None:
        assert selector.node is not None
        records, read = await _node_records(bus, selector.node, end)
    else:
        records, read = await _read_each(bus, subjects, end)
    for seq in sorted(records):
        builder(records[seq])
    return builder.lines, read


async def _read_each(bus: Bus, subjects: Iterable[str], end: int) -> tuple[dict[int, Record], int]:
    records: dict[int, Record] = {}  # by sequence: a record may match two filters
    read = 0
    for subject in subjects:
        read += await replay(bus, _into(records), subject=subject, end_seq=end)
    return records, read


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
