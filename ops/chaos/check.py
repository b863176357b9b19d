"""Judge a fleet's whole history: `python -m ops.chaos.check --nats URL --client-records FILE [--views FILE] [--json]`.

Reads RR_EVENTS from sequence 1, the dead-letter stream, the client's acknowledged records
(JSON lines of {"id": ..., "seq": ...}) and, with --views, the live views' hashes
({"last_seq": N, "hashes": {"work": ...}}, as `checker.view_hashes` computes them); rebuilds
every projection up to that sequence and hands it all to the pure checker. Exit 0 when clean,
1 on a violation, 2 when the input cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from eventbus.connection import Bus, connect
from eventbus.deadletter import list_parked
from eventbus.errors import BusError, InvalidEvent
from eventbus.events import Event
from eventbus.history import events
from ops.chaos.checker import KINDS, CheckReport, ClientRecord, DeadLetter, check, view_hashes
from projections import bundle
from servicekit.auth.credentials import connect_options, credentials_from_env


class LiveViews(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The hashes of the live views and the stream position they were taken at."""

    last_seq: int
    hashes: dict[str, str]


def read_records(path: Path) -> list[ClientRecord]:
    """The client's acknowledged events; raises ValueError naming the file and line that is wrong."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                out.append(msgspec.json.decode(line, type=ClientRecord))
            except msgspec.DecodeError as exc:
                raise ValueError(f"{path}:{number}: {exc}; each line must be {{\"id\": str, \"seq\": int}}") from None
    return out


def read_views(path: Path) -> LiveViews:
    """The live views' hashes; raises ValueError naming the file and field that is wrong."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=LiveViews)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: {exc}; expected {{\"last_seq\": int, \"hashes\": {{name: sha256}}}}") from None


class History(msgspec.Struct, frozen=True, kw_only=True):
    """What a server holds: the decoded log from sequence 1, how many messages did not decode, the dead letters."""

    log: list[tuple[int, Event]]
    undecodable: int
    parked: list[DeadLetter]


async def read_history(bus: Bus) -> History:
    """The whole RR_EVENTS log and the dead-letter stream, as the checker reads them."""
    log: list[tuple[int, Event]] = []
    undecodable = 0
    async for seq, event in events(bus):
        if isinstance(event, InvalidEvent):
            undecodable += 1
        else:
            log.append((seq, event))
    parked = [DeadLetter(dlq_seq=p.dlq_seq, reason=p.reason) for p in await list_parked(bus, limit=1_000_000)]
    return History(log=log, undecodable=undecodable, parked=parked)


async def judge_history(history: History, records: list[ClientRecord], live: LiveViews | None) -> CheckReport:
    """The checker's report over a history read already (folds and checks in a thread: they are CPU work)."""
    rebuilt = None
    if live is not None:
        upto = [(seq, event) for seq, event in history.log if seq <= live.last_seq]
        rebuilt = await asyncio.to_thread(lambda: view_hashes(bundle.fold_all_events(upto)))
    return await asyncio.to_thread(check, history.log, records, live=live.hashes if live else None, rebuilt=rebuilt,
                                   parked=history.parked)


async def judge(url: str, records: list[ClientRecord], live: LiveViews | None,
                auth: Mapping[str, Any] | None = None) -> tuple[CheckReport, int]:
    """The report over the server's whole history, and how many stored messages did not decode.

    `auth`: connect options for a server that requires credentials (servicekit/auth/credentials.py).
    """
    bus = await connect(url, node_id="chaos-check", **(auth or {}))
    try:
        history = await read_history(bus)
    finally:
        await bus.close()
    return await judge_history(history, records, live), history.undecodable


def render(report: CheckReport, undecodable: int) -> str:
    """The report for people: counts by kind, then each violation."""
    lines = [f"{report.events} events, {report.acknowledged} acknowledged, {report.work_items} work items, "
             f"{undecodable} undecodable"]
    lines += [f"  {kind:<28} {report.by_kind[kind]}" for kind in KINDS]
    lines += [f"{v.kind} at seq {v.seq} ({v.about}): {v.detail}" for v in report.violations]
    lines.append("clean" if report.clean else f"{len(report.violations)} violation(s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, judge, print; the exit code says whether the history is clean."""
    parser = argparse.ArgumentParser(prog="python -m ops.chaos.check", description=__doc__.splitlines()[0])
    parser.add_argument("--nats", required=True, help="NATS URL of the fleet")
    parser.add_argument("--client-records", required=True, type=Path, help="JSON lines of the client's acked events")
    parser.add_argument("--views", type=Path, help="JSON of the live views' hashes and their last_seq")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        records = read_records(args.client_records)
        live = read_views(args.views) if args.views else None
        auth = connect_options(credentials_from_env())  # $RR_NATS_CREDS, as rr reads it
        report, undecodable = asyncio.run(judge(args.nats, records, live, auth))
    except (OSError, ValueError, BusError) as exc:
        print(f"chaos check: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(msgspec.json.encode({"report": report, "undecodable": undecodable, "clean": report.clean}).decode())
    else:
        print(render(report, undecodable))
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
