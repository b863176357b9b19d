"""`rr dlq list`: messages consumers gave up on, with the reason each was parked."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

from cli.commands import open_bus
from cli.commands.streams import positive_int
from cli.nouns import summary
from eventbus.deadletter import ParkedMessage, list_parked
from servicekit.options import add_common_arguments, common_options


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr dlq list`."""
    parser = subparsers.add_parser("dlq", help=summary("dlq"))
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    show = verbs.add_parser("list", help="parked messages, oldest first, with their reasons")
    show.add_argument("--limit", type=positive_int, default=100, help="at most this many (default 100)")
    show.add_argument("--json", action="store_true", help="one JSON object per message (data base64)")
    add_common_arguments(show)
    show.set_defaults(func=run_list)


def describe(parked: ParkedMessage) -> str:
    """One line for people: where it came from, how often it was tried, and why it was parked."""
    return (
        f"{parked.dlq_seq:>6}  {parked.parked_at[:19]}  {parked.stream}/{parked.consumer} seq {parked.stream_seq}"
        f"  {parked.subject}  after {parked.deliveries} deliveries: {parked.reason}"
    )


def run_list(args: argparse.Namespace) -> int:
    """Print the parked messages; nothing parked prints a line saying so (exit 0)."""
    options = common_options(args)

    async def go() -> list[ParkedMessage]:
        async with open_bus(options, "dlq") as bus:
            return await list_parked(bus, limit=args.limit)

    parked = asyncio.run(go())
    for message in parked:
        print(msgspec.json.encode(message).decode() if args.json else describe(message))
    if not parked and not args.json:
        print("no parked messages")
    return 0
