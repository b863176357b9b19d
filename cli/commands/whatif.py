"""`rr whatif --since T --until T [--alt CONFIG ...]`: what other scheduler settings would have done with a recorded window."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import heapq
import sys
from pathlib import Path

import msgspec

from cli.commands import open_bus
from cli.commands.replay import point_in_time
from cli.nouns import summary
from cli.whatif.membership import online_at
from cli.whatif.recording import Recording, record
from cli.whatif.report import Agreement, Measures, agreement, measure, side_by_side
from cli.whatif.simulate import recorded, simulate
from config.settings import load_config
from eventbus import directreads
from eventbus.connection import Bus
from eventbus.errors import BusError, InvalidConfig, InvalidEvent
from eventbus.events import Event
from eventbus.history import Record, first_stored_at, last_sequence, replay
from eventbus.integrity import decode_on
from eventbus.subjects import EVENTS_ROOT
from servicekit.options import add_common_arguments, common_options
from servicekit.rebuild import CLOCK_SKEW

FROM_INDEX = "subject index"
MEMBERSHIP = f"{EVENTS_ROOT}.host.>"
WORK = f"{EVENTS_ROOT}.work.>"


class WhatIf(msgspec.Struct, frozen=True, kw_only=True):
    """`rr whatif --json`: the record, its replay under the recorded config, and each alternative."""

    since: dt.datetime
    until: dt.datetime
    seed: int
    runs: list[Measures]
    agreement: Agreement  # the record vs its replay: the README states the tolerance
    membership: str = FROM_INDEX  # where the nodes online at `since` came from: FROM_INDEX, or why the log's start


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr whatif`."""
    parser = subparsers.add_parser("whatif", help=summary("whatif"))
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

    async def go() -> tuple[Recording, str]:
        async with open_bus(options, "whatif") as bus:
            window = await window_events(bus, args.since, until)
            return record(window.events, args.since, until), window.membership

    rec, membership = asyncio.run(go())
    truth = recorded(rec)
    outcomes = [(label, simulate(rec, s, seed=args.seed, slots=args.slots)) for label, s in settings]
    runs = [measure("recorded", rec, truth), *(measure(label, rec, o) for label, o in outcomes)]
    report = WhatIf(since=args.since, until=until, seed=args.seed, runs=runs,
                    agreement=agreement(truth, outcomes[0][1], runs[0], runs[1]), membership=membership)
    if args.json:
        print(msgspec.json.encode(report).decode())
        return 0
    if membership != FROM_INDEX:
        print(f"membership at --since {membership}")
    print(f"window {args.since.isoformat()} .. {until.isoformat()}: {len(rec.arrivals)} items, {len(rec.nodes)} node spans")
    print(side_by_side(runs))
    print(f"replay vs record: {report.agreement.same_first_node:.0%} same first node")
    return 0


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """A window's inputs in log order, and where the membership at its start came from."""

    events: list[tuple[int, Event]]
    membership: str  # FROM_INDEX, or why it was read from the log's start


async def window_events(bus: Bus, since: dt.datetime, until: dt.datetime, *, skew: dt.timedelta = CLOCK_SKEW,
                        from_start: bool = False) -> Window:
    """Membership at `since` (who was online when the window opened), then membership and work to `until`, in log order.

    The records read are those stored from `skew` before `since` (a publisher stamps an event
    moments before the server stores it) to the first of each filter stamped at or after `until`
    (`recording.record` stops at the first of both). The membership before them comes from the newest record of each
    membership subject (`cli/whatif/membership.py`), which the server answers from its subject
    index: a few hundred records, wherever the window is in the log. Where it cannot (too many
    subjects, a newest record that does not decode) or `from_start` asks, the membership is read
    from the log's start, and `membership` says why.
    """
    first = await first_stored_at(bus, since - skew)
    start = first if first is not None else await last_sequence(bus) + 1
    members, membership = (None, "read from the log's start, as asked") if from_start else await _members_at(bus, start - 1)
    if members is None:
        before = _Decoded(until)
        await replay(bus, before, subject=MEMBERSHIP, end_seq=start - 1)
        members = before.events
    # One read per filter, merged: a consumer with both filters took 74 s for the 50k records of a day at 2M
    # records, each alone ~1 s (the server's next match across several filters is slow, ops/bench/README.md).
    host, work = _Decoded(until), _Decoded(until)
    await asyncio.gather(replay(bus, host, subject=MEMBERSHIP, start_seq=start, stop=lambda: host.done),
                         replay(bus, work, subject=WORK, start_seq=start, stop=lambda: work.done))
    return Window(events=[*members, *heapq.merge(host.events, work.events, key=lambda pair: pair[0])], membership=membership)


class _Decoded:
    """A read's records decoded as they come, in log order; `done` once one is stamped at or after `until`."""

    def __init__(self, until: dt.datetime) -> None:
        self.until = until
        self.events: list[tuple[int, Event]] = []
        self.done = False

    def __call__(self, record: Record) -> None:
        try:
            event = decode_on(record.subject, record.data, record.headers)
        except InvalidEvent:
            return  # `rr dlq` and `rr timeline` report those; a window's inputs skip them
        self.events.append((record.seq, event))
        self.done = self.done or (event.ts is not None and event.ts >= self.until)


async def _members_at(bus: Bus, up_to_seq: int) -> tuple[list[tuple[int, Event]] | None, str]:
    """The online nodes' newest HOST_ONLINE at `up_to_seq` from the server's subject index; None and why where it cannot say."""
    try:
        newest = await directreads.last_per_subject(bus, MEMBERSHIP, up_to_seq)
        decoded = [(r.seq, decode_on(r.subject, r.data, r.headers)) for r in newest]
    except InvalidEvent as exc:  # the fold from the start skips it and goes by the record before, which the index lacks
        return None, f"read from the log's start: a node's newest membership record does not decode ({exc})"
    except BusError as exc:
        if exc.retryable:
            raise
        return None, f"read from the log's start: {exc}"
    return [*online_at(decoded)], FROM_INDEX
