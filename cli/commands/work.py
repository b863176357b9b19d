"""`rr work add|list|show|cancel`: put work in the queue, look at it, cancel it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from cli.commands import open_bus, workview
from cli.nouns import summary
from config.hosts import load_hosts
from config.sections.telemetry import TelemetrySettings
from config.settings import RrConfig, load_config
from eventbus import tracing
from eventbus.connection import Bus
from eventbus.events import Event, WorkAdded, WorkCancelled
from eventbus.history import aggregate_events
from eventbus.publisher import Publisher
from projections import work, workviews
from servicekit.admission import AdmissionRules, admitted, rules_for
from servicekit.options import CommonOptions, add_common_arguments, common_options
from servicekit.rebuild import state_at_seq
from servicekit.telemetry.providers import start_telemetry
from servicekit.telemetry.status import rr_version
from servicekit.workrequest import InvalidWork, WorkSeeds, decode_seeds, seeds_from_fields

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr work` and its verbs."""
    parser = subparsers.add_parser("work", help=summary("work"))
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    add = verbs.add_parser("add", help="queue a work item (JSON seeds or flags)")
    add.add_argument("seeds", nargs="?", help='JSON, e.g. \'{"work_type": "selfplay", "board_type": "hex8", "num_players": 2}\'')
    add.add_argument("--json-file", metavar="PATH", help="read the JSON from a file ('-': standard input)")
    add.add_argument("--type", dest="work_type")
    add.add_argument("--board", dest="board_type")
    add.add_argument("--players", dest="num_players", type=int)
    add.add_argument("--games", dest="num_games", type=int)
    add.add_argument("--priority", type=int)
    add.add_argument("--target", dest="target_node")
    add.add_argument("--param", action="append", default=[], metavar="K=V", help="extra parameter (repeatable)")
    listing = verbs.add_parser("list", help="work items and their state")
    listing.add_argument("--state", choices=[s.value for s in work.WorkStatus])
    show = verbs.add_parser("show", help="one item's events in order")
    show.add_argument("work_id")
    cancel = verbs.add_parser("cancel", help="cancel an item (a running attempt is stopped)")
    cancel.add_argument("work_id")
    cancel.add_argument("--reason", default="cancelled by operator")
    for verb, func in ((add, run_add), (listing, run_list), (show, run_show), (cancel, run_cancel)):
        verb.add_argument("--json", action="store_true", help="machine-readable output")
        add_common_arguments(verb)
        verb.set_defaults(func=func)


_FLAGS = ("work_type", "board_type", "num_players", "num_games", "priority", "target_node")


def seeds_from_args(args: argparse.Namespace) -> WorkSeeds:
    """The request from the JSON argument, the JSON file or the flags; raises InvalidWork naming the field."""
    text = _json_text(args)
    if text is not None:
        return decode_seeds(text)
    return seeds_from_fields({name: getattr(args, name) for name in _FLAGS}, args.param)


def _json_text(args: argparse.Namespace) -> str | None:
    """The JSON the operator gave (argument or file), None when the flags describe the work."""
    given = [name for name in ("seeds", "json_file") if getattr(args, name) is not None]
    flags = [f"--{name}" for name in _FLAGS if getattr(args, name) is not None] + (["--param"] if args.param else [])
    if len(given) > 1 or (given and flags):
        raise InvalidWork(f"give the work once: as JSON, as --json-file or as flags (got {', '.join(given + flags)})")
    if args.json_file is None:
        seeds: str | None = args.seeds
        return seeds
    try:
        return sys.stdin.read() if args.json_file == "-" else Path(args.json_file).read_text()
    except OSError as exc:
        raise InvalidWork(f"--json-file {args.json_file}: {exc.strerror}") from None


def run_add(args: argparse.Namespace) -> int:
    """Validate against the config and hosts file, append WORK_ADDED; exit 2 (nothing appended) when refused."""
    options = common_options(args)
    config = load_config(options.config_path)
    try:
        event = admitted(seeds_from_args(args), admission_rules(config), requested_by=options.node_id)
    except InvalidWork as exc:
        print(f"rr work add: invalid work: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_append(options, config.telemetry, event))
    print(json.dumps({"success": True, "work_id": event.work_id}) if args.json else event.work_id)
    return 0


def admission_rules(config: RrConfig) -> AdmissionRules:
    """What requests are checked against: the config file's admission and templates, and its hosts file."""
    return rules_for(config, load_hosts(config.hosts_file) if config.hosts_file else None)


async def _append(options: CommonOptions, telemetry: TelemetrySettings, event: WorkAdded) -> None:
    """Append WORK_ADDED inside the item's root span (exported per the config's `telemetry:`; none by default)."""
    providers = start_telemetry(telemetry, service="cli", node=options.node_id, version=rr_version())
    providers.activate()
    try:
        async with open_bus(options) as bus:
            with tracing.root("work add", {"rr.work_id": event.work_id, "rr.requested_by": event.requested_by}):
                await Publisher(bus).publish(event)
    finally:
        await providers.shutdown()  # exports the span before the command exits


async def work_state(bus: Bus) -> work.WorkState:
    """The work queue now: the newest snapshot (its own or the bundle's) plus the log after it."""
    return (await state_at_seq(bus, work.PROJECTION)).state


def run_list(args: argparse.Namespace) -> int:
    """Print the items (optionally of one state), oldest first."""
    options = common_options(args)
    state = asyncio.run(_with_bus(options, work_state))
    items = sorted(state.items.values(), key=lambda i: i.added_seq)
    items = [i for i in items if args.state is None or i.status.value == args.state]
    hidden = workviews.retired_count(state) if args.state in (None, work.WorkStatus.COMPLETED.value) else 0
    note = workview.retired_note(hidden, state.retire_after)
    if args.json:
        print(msgspec.json.encode(items).decode())
        if note:
            print(note, file=sys.stderr)  # stdout stays one JSON document
        return 0
    print(workview.list_table(items) + (f"\n{note}" if note else ""))
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print one item's events; exit 1 for an unknown id."""
    found = asyncio.run(_with_bus(common_options(args), lambda bus: aggregate_events(bus, "work", args.work_id)))
    if not found:
        print(f"rr work show: no work item {args.work_id}", file=sys.stderr)
        return 1
    state = item_state(found)
    refused = {a.seq: a.reason for a in state.anomalies}
    if not args.json:
        print(workview.item_report(args.work_id, found, refused, state.items.get(args.work_id)))
        return 0
    for seq, event in found:
        print(json.dumps({"seq": seq, "event": json.loads(msgspec.json.encode(event)), "not_applied": refused.get(seq)}))
    return 0


def item_state(found: list[tuple[int, Event]]) -> work.WorkState:
    """The work fold over one item's events: the item as it stands, and the events it refused."""
    state = work.WorkState()
    for seq, event in found:
        if event.type_name() in work.PROJECTION.reads:
            state = work.apply(state, event, seq)
    return state


def not_applied(found: list[tuple[int, Event]]) -> dict[int, str]:
    """Sequence -> why the item's lifecycle refused that event (a superseded attempt's report, an illegal move)."""
    return {a.seq: a.reason for a in item_state(found).anomalies}


def run_cancel(args: argparse.Namespace) -> int:
    """Append WORK_CANCELLED; exit 1 (nothing appended) for an unknown or finished item."""
    problem = asyncio.run(_cancel(common_options(args), args.work_id, args.reason))
    if problem:
        print(f"rr work cancel: {problem}", file=sys.stderr)
        return 1
    print(json.dumps({"success": True, "work_id": args.work_id}) if args.json else f"cancelled {args.work_id}")
    return 0


async def _cancel(options: CommonOptions, work_id: str, reason: str) -> str | None:
    async with open_bus(options) as bus:
        state = await work_state(bus)
        item = work.lookup(state, work_id)  # a retired item is a completed one
        if item is None:
            return f"no work item {work_id}"
        if item.status in work.TERMINAL:
            return f"work item {work_id} is already {item.status.value}"
        last = max(seq for seq, _ in await aggregate_events(bus, "work", work_id))
        event = WorkCancelled(work_id=work_id, reason=reason, requested_by=options.node_id)
        await Publisher(bus).publish(event, expect_last_seq=last)
        return None


async def _with_bus(options: CommonOptions, read: Callable[[Bus], Awaitable[T]]) -> T:
    async with open_bus(options) as bus:
        return await read(bus)
