"""`rr nodes`: every node, alive or offline as the log says, with its newest heartbeat's resources and health."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

from cli.commands import open_bus
from cli.commands.status import age, table, when
from cli.nouns import summary
from cluster.membership.log import membership_events
from cluster.membership.view import NodeRow, node_rows
from config.settings import load_config
from eventbus.events import utcnow
from eventbus.heartbeats import latest_heartbeats
from projections import cluster
from servicekit.options import add_common_arguments, common_options


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr nodes`."""
    parser = subparsers.add_parser("nodes", help=summary("nodes"))
    parser.add_argument("--json", action="store_true", help="one JSON list of nodes")
    add_common_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fold the log's host transitions, read each node's newest beat, print them side by side."""
    options = common_options(args)
    settings = load_config(options.config_path).membership

    async def go() -> list[NodeRow]:
        async with open_bus(options, "nodes") as bus:
            state = cluster.ClusterState()
            for seq, event in await membership_events(bus):
                state = cluster.apply(state, event, seq)
            beats = await latest_heartbeats(bus)
        return node_rows(state.nodes, beats, now=utcnow(), silence_s=settings.silence_s, lag_threshold_s=settings.lag_threshold_s)

    rows = asyncio.run(go())
    print(msgspec.json.encode(rows).decode() if args.json else format_nodes(rows))
    return 0


def format_nodes(rows: list[NodeRow]) -> str:
    """The nodes as a table for people."""
    if not rows:
        return "no nodes seen: no HOST_ONLINE in the log and no heartbeat in RR_TELEMETRY"
    lines: list[tuple[str, ...]] = [
        ("NODE", "STATUS", "LAST BEAT", "CPU", "MEM", "DISK FREE", "GPUS", "JOBS", "LOOP LAG", "ROLES", "VERSION", "SINCE", "REASON")
    ]
    lines += [_line(r) for r in rows]
    return table(lines)


def _line(r: NodeRow) -> tuple[str, ...]:
    return (
        r.node, _status(r), age(r.last_beat_age_s) + (" (left)" if r.leaving else ""),
        f"{r.cpu_percent:.0f}% of {r.cpu_count}" if r.cpu_percent is not None else "-",
        f"{r.memory_percent:.0f}% of {r.memory_gb:.1f}G" if r.memory_percent is not None and r.memory_gb else "-",
        f"{r.disk_free_gb:.1f}G" if r.disk_free_gb is not None else "-",
        _gpus(r), str(len(r.jobs)) if r.jobs else "-",
        f"{r.loop_lag_s:.3f}s" + (" (lagging)" if r.lagging else "") if r.loop_lag_s is not None else "-",
        ",".join(r.roles) or "-", r.version or "-", when(r.since), r.reason or "-",
    )


def _status(r: NodeRow) -> str:
    # Where the log and the beats disagree (no leader running, or not yet judged), say so.
    if r.status == "online" and not r.beating:
        return "online (silent)"
    if r.status != "online" and r.beating:
        return f"{r.status} (beating)"
    return r.status


def _gpus(r: NodeRow) -> str:
    if not r.gpus:
        return "-"
    known = [g.utilization for g in r.gpus if g.utilization is not None]
    busy = f" {sum(known) / len(known):.0f}%" if known else ""
    return f"{len(r.gpus)}x {r.gpus[0].name}{busy}"
