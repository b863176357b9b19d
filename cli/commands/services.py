"""`rr services [--json]`: the rr services running now, found through the NATS micro protocol ($SRV.INFO)."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

from cli.commands import open_bus
from cli.commands.status import table
from cli.nouns import summary
from eventbus.connection import Bus
from eventbus.micro import STATUS_ENDPOINT, ServiceInfo, discover, request
from servicekit.options import CommonOptions, add_common_arguments, common_options
from servicekit.telemetry.lifecycle import MICRO_PREFIX
from servicekit.telemetry.status import ServiceStatus

_status_decoder = msgspec.json.Decoder(ServiceStatus)


class ServiceRow(msgspec.Struct, frozen=True, kw_only=True):
    """One running service instance: who it is, and its status when its endpoint answered."""

    name: str  # the micro service name, rr-<service>
    id: str
    version: str
    node: str
    state: str  # running, stopping, or "no answer" when the status endpoint did not reply
    status: ServiceStatus | None = None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr services`."""
    parser = subparsers.add_parser("services", help=summary("services"))
    parser.add_argument("--json", action="store_true", help="one JSON list of services, with their full status")
    parser.add_argument("--timeout", type=float, default=2.0, metavar="S", help="how long to wait for answers (default 2)")
    add_common_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Ask every service for its INFO and status; print them. Exit 0 even when none runs (that is an answer)."""
    rows = asyncio.run(running_services(common_options(args), timeout=args.timeout))
    print(msgspec.json.encode(rows).decode() if args.json else format_services(rows))
    return 0


async def running_services(options: CommonOptions, *, timeout: float = 2.0) -> list[ServiceRow]:
    """Every rr service instance that answers discovery, with its status."""
    async with open_bus(options, "services") as bus:
        infos = [i for i in await discover(bus, timeout=timeout) if i.name.startswith(MICRO_PREFIX)]
        statuses = await asyncio.gather(*(_status(bus, info, timeout) for info in infos))
    return service_rows(infos, statuses)


async def _status(bus: Bus, info: ServiceInfo, timeout: float) -> ServiceStatus | None:
    subject = info.endpoint_subject(STATUS_ENDPOINT)
    data = await request(bus, subject, timeout=timeout) if subject else None
    if data is None:
        return None
    try:
        return _status_decoder.decode(data)
    except msgspec.DecodeError:
        return None  # another version's status: the INFO columns still stand


def service_rows(infos: list[ServiceInfo], statuses: list[ServiceStatus | None]) -> list[ServiceRow]:
    """Rows sorted by service name then node."""
    rows = [
        ServiceRow(
            name=info.name, id=info.id, version=info.version, node=(info.metadata or {}).get("node", "?"),
            state=status.state if status else "no answer", status=status,
        )
        for info, status in zip(infos, statuses)
    ]
    return sorted(rows, key=lambda r: (r.name, r.node, r.id))


def format_services(rows: list[ServiceRow]) -> str:
    """The services as a table for people."""
    if not rows:
        return "no rr services answered discovery ($SRV.INFO)"
    lines: list[tuple[str, ...]] = [("SERVICE", "NODE", "STATE", "VERSION", "UPTIME", "LOOP LAG", "CONSUMED", "PENDING", "ID")]
    lines += [_line(r) for r in rows]
    return table(lines)


def _line(row: ServiceRow) -> tuple[str, ...]:
    status = row.status
    if status is None:
        return (row.name, row.node, row.state, row.version, "-", "-", "-", "-", row.id)
    consumed = sum(c.stats.handled for c in status.consumers)
    pending = [c.lag.pending for c in status.consumers if c.lag is not None]
    return (
        row.name, row.node, row.state, row.version, _duration(status.uptime_s),
        f"{status.loop_lag.last_s * 1000:.1f}ms", str(consumed) if status.consumers else "-",
        str(sum(pending)) if pending else "-", row.id,
    )


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
