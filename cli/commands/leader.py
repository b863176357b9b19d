"""`rr leader [--json]`: who leads each singleton role, under which epoch, since when; "none" when free."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

from cli.commands import open_bus
from cli.nouns import summary
from cluster.leadership.status import LeaderView, format_table, leader_view
from config.settings import load_config
from eventbus.connection import Bus
from eventbus.errors import InvalidEvent
from eventbus.events import LeaderElected, utcnow
from eventbus.follow import start_for_last
from eventbus.history import Record, replay
from eventbus.integrity import decode_on
from eventbus.leases import LeaseBucket, LeaseRecord
from eventbus.subjects import EVENTS_ROOT, token
from servicekit.options import CommonOptions, add_common_arguments, common_options

KNOWN_ROLES = ("scheduler",)  # always listed, even before their first election


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr leader`."""
    parser = subparsers.add_parser("leader", help=summary("leader"))
    parser.add_argument("--json", action="store_true", help="one JSON object per role")
    add_common_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print each role's leader; exit 0 even when a role is free (that is an answer, not an error)."""
    options = common_options(args)
    bucket = load_config(options.config_path).leadership.bucket
    views = asyncio.run(leader_views(options, bucket))
    if args.json:
        for view in views:
            print(msgspec.json.encode(view).decode())
    else:
        print(format_table(views, utcnow()))
    return 0


async def leader_views(options: CommonOptions, bucket_name: str) -> list[LeaderView]:
    """Read every role's lease and its latest LEADER_ELECTED."""
    async with open_bus(options) as bus:
        bucket = LeaseBucket(bus, bucket_name)
        exists = await bucket.exists()
        roles = sorted(set(KNOWN_ROLES) | set(await bucket.roles() if exists else []))
        views = []
        for role in roles:
            record = await bucket.read(role) if exists else LeaseRecord(role=role, revision=0, state="absent")
            views.append(leader_view(role, record, await last_elected(bus, role, record)))
        return views


ELECTIONS_LOOKED_AT = 16  # the newest elections of a role searched for one the lease backs


async def last_elected(bus: Bus, role: str, lease: LeaseRecord) -> LeaderElected | None:
    """The latest LEADER_ELECTED of a role in the log that the lease backs, found without reading the whole log.

    A candidate's credentials can publish an election with a made-up epoch (the fences do not
    believe it, projections/fencing.py); here the lease itself tells: the holder's election names
    the holder and its epoch, and no real election's epoch is past the key's latest revision.
    """
    subject = f"{EVENTS_ROOT}.{LeaderElected.aggregate}.{token(role)}.{LeaderElected.type_name()}.*"
    start, _skip = await start_for_last(bus, ELECTIONS_LOOKED_AT, subject=subject)
    records: list[Record] = []
    await replay(bus, records.append, subject=subject, start_seq=start)
    elections: list[LeaderElected] = []
    for record in reversed(records):
        try:
            event = decode_on(record.subject, record.data, record.headers)
        except InvalidEvent:
            continue  # unreadable, or its body disagrees with its subject: not an election to believe
        if isinstance(event, LeaderElected) and event.source == event.node:  # a node announces only its own win
            elections.append(event)
    holder = lease.holder
    if holder is not None:  # the holder's own announcement, else the newest one before its term
        own = [e for e in elections if (e.node, e.epoch) == (holder.node, lease.epoch)]
        return next(iter(own), None) or next((e for e in elections if (e.epoch or 0) < (lease.epoch or 0)), None)
    return next((e for e in elections if lease.revision == 0 or (e.epoch or 0) <= lease.revision), None)
