"""`rr whatif --since T --until T [--alt CONFIG ...]`: what other scheduler settings would have done with a recorded window."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path

import msgspec

from cli.commands import open_bus
from cli.commands.replay import point_in_time
from cli.whatif.recording import Recording, record
from cli.whatif.report import Agreement, Measures, agreement, measure, side_by_side
from cli.whatif.simulate import recorded, simulate
from config.settings import load_config
from eventbus.connection import Bus
from eventbus.errors import InvalidConfig, InvalidEvent
from eventbus.events import Event
from eventbus.history import Record, replay
from eventbus.integrity import decode_on
from eventbus.subjects import EVENTS_ROOT
from servicekit.options import add_common_arguments, common_options
from servicekit.rebuild import CLOCK_SKEW


class WhatIf(msgspec.Struct, frozen=True, kw_only=True):
    """`rr whatif --json`: the record, its replay under the recorded config, and each alternative."""

    since: dt.datetime
    until: dt.datetime
    seed: int
    runs: list[Measures]
    agreement: Agreement  # the record vs its replay: the README states the tolerance


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr whatif`."""
    parser = subparsers.add_parser("whatif", help="replay a recorded window through other scheduler settings, side by side")
    parser.add_argument("--since", type=point_in_time, required=True, metavar="TIME", help="window start: ISO 8601 or an age")
    parser.add_argument("--until", type=point_in_time, default=None, metavar="TIME", help="window end (default: now)")
    parser.add_argument("--alt", action="append", default=[], metavar="CONFIG",
                        help="an rr config file whose scheduler section to try (repeatable); --config is the recorded one")
    parser.add_argument("--seed", type=int, default=0, help="seed of the duration draws (same seed, same report)")
    parser.add_argument("--slots", type=int, default=1, help="jobs each node runs at once in the simulation")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    add_common_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the window, simulate each config, print the report; exit 2 for a bad config file."""
    options = common_options(args)
    until = args.until or dt.datetime.now(dt.UTC)
    try:
        settings = [("recorded config (replay)", load_config(options.config_path).scheduler)]
        settings += [(Path(p).name, load_config(p).scheduler) for p in args.alt]
    except InvalidConfig as exc:
        print(f"rr whatif: {exc}", file=sys.stderr)
        return 2

    async def go() -> Recording:
        async with open_bus(options, "whatif") as bus:
            return record(await window_events(bus, args.since, until), args.since, until)

    rec = asyncio.run(go())
    truth = recorded(rec)
    outcomes = [(label, simulate(rec, s, seed=args.seed, slots=args.slots)) for label, s in settings]
    runs = [measure("recorded", rec, truth), *(measure(label, rec, o) for label, o in outcomes)]
    report = WhatIf(since=args.since, until=until, seed=args.seed, runs=runs,
                    agreement=agreement(truth, outcomes[0][1], runs[0], runs[1]))
    if args.json:
        print(msgspec.json.encode(report).decode())
        return 0
    print(f"window {args.since.isoformat()} .. {until.isoformat()}: {len(rec.arrivals)} items, {len(rec.nodes)} node spans")
    print(side_by_side(runs))
    print(f"replay vs record: {report.agreement.same_first_node:.0%} same first node")
    return 0


async def window_events(
    bus: Bus, since: dt.datetime, until: dt.datetime, *, skew: dt.timedelta = CLOCK_SKEW
) -> list[tuple[int, Event]]:
    """Membership from the log's start (who was online when the window opened), work from `since` on, in log order.

    Work is read from the records stored `skew` before `since` (a publisher stamps an event
    moments before the server stores it).
    """
    records: dict[int, Record] = {}
    await replay(bus, lambda r: records.setdefault(r.seq, r), subject=f"{EVENTS_ROOT}.host.>")
    await replay(bus, lambda r: records.setdefault(r.seq, r), subject=f"{EVENTS_ROOT}.work.>", start_time=since - skew)
    out: list[tuple[int, Event]] = []
    for seq in sorted(records):
        try:
            out.append((seq, decode_on(records[seq].subject, records[seq].data, records[seq].headers)))
        except InvalidEvent:
            continue  # `rr dlq` and `rr timeline` report those; a window's inputs skip them
    return out
