"""`rr events tail`: the event log, decoded, one line per event, live."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from cli.commands import open_bus
from cli.nouns import summary
from eventbus.connection import Bus
from eventbus.errors import InvalidEvent
from eventbus.events import EVENT_TYPES, Event
from eventbus.follow import follow, start_for_last
from eventbus.history import Record, replay
from eventbus.integrity import decode_on
from eventbus.subjects import ALL_EVENTS, EVENTS_ROOT, token
from servicekit.options import add_common_arguments, common_options

ENVELOPE = frozenset({"id", "ts", "source", "v", "epoch", "trace"})
AGGREGATES = sorted({t.aggregate for t in EVENT_TYPES.values()})


def event_type(text: str) -> str:
    """argparse type: an event type of the catalog, in any case."""
    name = text.upper()
    if name not in EVENT_TYPES:
        raise argparse.ArgumentTypeError(f"unknown event type {text!r}; known: {', '.join(sorted(EVENT_TYPES))}")
    return name


def sequence(text: str) -> int:
    """argparse type: a stream sequence or count, >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr events tail`."""
    parser = subparsers.add_parser("events", help=summary("events"))
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    tail = verbs.add_parser("tail", help="print events as they happen (Ctrl-C to stop)")
    tail.add_argument("--type", type=event_type, help="only events of this type (e.g. WORK_FAILED)")
    tail.add_argument("--node", help="only events published by this node")
    tail.add_argument("--aggregate", choices=AGGREGATES, help="only events about this kind of thing")
    tail.add_argument("--id", dest="aggregate_id", help="only events about this id (a node, work item, model ...)")
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--since-seq", type=sequence, metavar="N", help="start at stream sequence N")
    start.add_argument("--last", type=sequence, metavar="N", help="start with the last N matching events")
    tail.add_argument("--no-follow", action="store_true", help="print what is stored and exit")
    tail.add_argument("--json", action="store_true", help="one JSON object per line: seq, subject, event")
    add_common_arguments(tail)
    tail.set_defaults(func=run_tail)


def tail_subject(type_name: str | None, node: str | None, aggregate: str | None, aggregate_id: str | None) -> str:
    """The subject filter for a combination of filters: rr.evt.<aggregate>.<id>.<TYPE>.<node>."""
    parts = [aggregate or "*", token(aggregate_id) if aggregate_id else "*", type_name or "*", token(node) if node else "*"]
    if parts == ["*"] * 4:
        return ALL_EVENTS
    return ".".join([EVENTS_ROOT, *parts])


# Multi-line facts stay out of the one-line view (`rr work show` and --json print them whole);
# one-line causes are printed whole, whatever their length.
MULTI_LINE = frozenset({"stderr_tail"})
WHOLE = frozenset({"cause", "reason"})


def _fact(value: Any, limit: int | None = 80) -> str:
    if isinstance(value, dt.datetime):
        text = value.isoformat(timespec="milliseconds")
    else:
        text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    text = " ".join(text.split("\n"))
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def describe(seq: int, event: Event) -> str:
    """One line for people: sequence, time, type, what it is about, its facts, who published it."""
    when = event.ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if event.ts else "-"
    facts = []
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if name in ENVELOPE or name in MULTI_LINE or name == event.key_field or value is None or value in ("", [], {}):
            continue
        facts.append(f"{name}={_fact(value, None if name in WHOLE else 80)}")
    if event.epoch is not None:
        facts.append(f"epoch={event.epoch}")
    about = f"{event.aggregate}/{event.aggregate_id()}"
    return f"{seq:>8}  {when}  {event.type_name():<27} {about}  {' '.join(facts)}  (by {event.source or '?'})"


def json_line(record: Record) -> str:
    """One line for machines: {"seq", "subject", "event"} or {"seq", "subject", "error"}."""
    try:
        event: Event | None = decode_on(record.subject, record.data, record.headers)
    except InvalidEvent as exc:
        return msgspec.json.encode({"seq": record.seq, "subject": record.subject, "error": str(exc)}).decode()
    return msgspec.json.encode({"seq": record.seq, "subject": record.subject, "event": event}).decode()


def text_line(record: Record) -> str:
    """describe() of a record, or a line saying why it could not be decoded."""
    try:
        return describe(record.seq, decode_on(record.subject, record.data, record.headers))
    except InvalidEvent as exc:
        return f"{record.seq:>8}  undecodable message on {record.subject}: {exc}"


async def _until_done(work: Coroutine[Any, Any, Any], done: asyncio.Future[None]) -> None:
    # Stops `work` when `done` resolves (the reader went away); `work`'s own error propagates.
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait([task, done], return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        await asyncio.wait([task])  # unlike suppress(CancelledError), never swallows our own cancellation
    if not task.cancelled():
        task.result()


async def tail(bus: Bus, args: argparse.Namespace, emit: Callable[[str], None]) -> None:
    """Print matching events from the requested start, then live (unless --no-follow)."""
    subject = tail_subject(args.type, args.node, args.aggregate, args.aggregate_id)
    start, skip = (None, 0)
    if args.last is not None:
        start, skip = await start_for_last(bus, args.last, subject=subject)
    elif args.since_seq is not None:
        start = args.since_seq
    render = json_line if args.json else text_line
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_record(record: Record) -> None:
        nonlocal skip
        if skip > 0:
            skip -= 1
            return
        try:
            emit(render(record))
        except BrokenPipeError:  # `rr events tail | head`: the reader left
            if not done.done():
                done.set_result(None)

    if args.no_follow:
        await _until_done(replay(bus, on_record, subject=subject, start_seq=start or 1), done)
    else:
        await _until_done(follow(bus, on_record, subject=subject, start_seq=start), done)


def _print(line: str) -> None:
    print(line, flush=True)


def run_tail(args: argparse.Namespace) -> int:
    """`rr events tail`: exits 0 on Ctrl-C or when the reader of stdout goes away."""
    options = common_options(args)

    async def go() -> None:
        async with open_bus(options, "tail") as bus:
            await tail(bus, args, _print)

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Python's exit flush would complain about the closed pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
