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
from pathlib import Path

import msgspec

from eventbus.connection import connect
from eventbus.deadletter import list_parked
from eventbus.errors import BusError, InvalidEvent
from eventbus.events import Event
from eventbus.history import events
from ops.chaos.checker import KINDS, CheckReport, ClientRecord, DeadLetter, check, view_hashes
from projections import bundle


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


async def judge(url: str, records: list[ClientRecord], live: LiveViews | None) -> tuple[CheckReport, int]:
    """The report over the server's whole history, and how many stored messages did not decode."""
    bus = await connect(url, node_id="chaos-check")
    try:
        log: list[tuple[int, Event]] = []
        undecodable = 0
        async for seq, event in events(bus):
            if isinstance(event, InvalidEvent):
                undecodable += 1
            else:
                log.append((seq, event))
        parked = [DeadLetter(dlq_seq=p.dlq_seq, reason=p.reason) for p in await list_parked(bus, limit=1_000_000)]
    finally:
        await bus.close()
    rebuilt = None
    if live is not None:
        upto = [(seq, event) for seq, event in log if seq <= live.last_seq]
        rebuilt = await asyncio.to_thread(lambda: view_hashes(bundle.fold_all_events(upto)))
    report = await asyncio.to_thread(check, log, records, live=live.hashes if live else None, rebuilt=rebuilt, parked=parked)
    return report, undecodable


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
        report, undecodable = asyncio.run(judge(args.nats, records, live))
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
