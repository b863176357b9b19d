"""`rr timeline [--node N] [--work ID] [--model M]`: what happened, in log order, one sentence per event with why."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

import msgspec

from eventbus.connection import Bus
from eventbus.history import Record, last_sequence, replay
from projections.timeline import Selector, TimelineBuilder, TimelineLine, subjects_read
from services.commands import open_bus
from services.commands.status import progress_on_stderr
from services.options import add_common_arguments, common_options


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
    """Fold the subjects the selector needs (the whole log for a node) and return its lines."""
    return (await read_timeline(bus, selector))[0]


async def read_timeline(bus: Bus, selector: Selector) -> tuple[list[TimelineLine], int]:
    """The selector's lines and how many records were read for them."""
    builder = TimelineBuilder(selector)
    subjects = subjects_read(selector)
    if subjects is None:
        count = await replay(bus, _counted(builder))
        return builder.lines, count
    end = await last_sequence(bus)
    records: dict[int, Record] = {}  # by sequence: a record may match two filters
    for subject in subjects:
        await replay(bus, lambda r: records.setdefault(r.seq, r), subject=subject, end_seq=end)
    for seq in sorted(records):
        builder(records[seq])
    return builder.lines, len(records)


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
