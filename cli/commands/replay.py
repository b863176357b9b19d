"""`rr replay --at TIME | --seq N`: the cluster as it was then, in the same shape as `rr status`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re

from cli.commands import open_bus
from cli.commands.status import print_view, progress_on_stderr
from cli.nouns import summary
from cluster.leadership.election import load_candidates
from config.settings import load_config
from eventbus.events import utcnow
from projections import bundle
from projections.status_view import status_view
from servicekit.options import add_common_arguments, common_options
from servicekit.rebuild import Rebuilt, state_at_seq, state_at_time

_AGO = re.compile(r"^-?(\d+(?:\.\d+)?)\s*([smhd])(?:\s+ago)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def point_in_time(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """argparse type: ISO 8601 (no zone means UTC) or an age such as 90s, 15m, 2h ago, 1d (a leading '-' is allowed)."""
    ago = _AGO.match(text.strip())
    if ago:
        return (now or utcnow()) - dt.timedelta(seconds=float(ago.group(1)) * _UNITS[ago.group(2)])
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r}; use ISO 8601 (2025-03-04T05:06:07Z) or an age (90s, 15m, '2h ago', 1d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def sequence(text: str) -> int:
    """argparse type: a stream sequence >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a stream sequence (a positive integer), got {text!r}")
    return int(text)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr replay`."""
    parser = subparsers.add_parser("replay", help=summary("replay"))
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", type=point_in_time, metavar="TIME", help="ISO 8601 time (UTC unless it says so), or an age: 90s, 15m, '2h ago', 1d")
    when.add_argument("--seq", type=sequence, metavar="N", help="stream sequence N (events 1..N)")
    parser.add_argument("--json", action="store_true", help="one JSON object, the shape of `rr status --json`")
    parser.add_argument("--no-snapshot", action="store_true", help="fold from sequence 1 even if a snapshot fits")
    add_common_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fold the log up to the requested point and print the status of then."""
    options = common_options(args)

    async def go() -> Rebuilt[bundle.ProjectionSet]:
        async with open_bus(options, "replay") as bus:
            candidates = await load_candidates(await asyncio.to_thread(load_config, options.config_path))
            if args.at is not None:
                return await state_at_time(bus, args.at, use_snapshot=not args.no_snapshot, progress=progress_on_stderr,
                                           candidates=candidates)
            return await state_at_seq(bus, seq=args.seq, use_snapshot=not args.no_snapshot, progress=progress_on_stderr,
                                      candidates=candidates)

    rebuilt = asyncio.run(go())
    state = rebuilt.state
    as_of = args.at if args.at is not None else (state.last_ts or utcnow())
    print_view(status_view(state, now=as_of, node_id=options.node_id), args.json)
    return 0
