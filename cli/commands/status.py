"""`rr status`: the cluster now, folded from the log (snapshot + tail): leaders, nodes, work, models, data."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Sequence

import msgspec

from cli.commands import open_bus
from cli.nouns import summary
from cluster.leadership.election import load_candidates
from config.settings import load_config
from eventbus.events import utcnow
from projections import bundle
from projections.status_view import StatusView, status_view
from servicekit.options import add_common_arguments, common_options
from servicekit.rebuild import Rebuilt, state_at_seq, store

SLOW_FOLD_HINT = 100_000  # records folded past the snapshot worth a hint on stderr


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr status`."""
    parser = subparsers.add_parser("status", help=summary("status"))
    parser.add_argument("--json", action="store_true", help="one JSON object (the seeds' /status keys and more)")
    parser.add_argument("--no-snapshot", action="store_true", help="fold the whole log, ignoring the stored snapshot")
    parser.add_argument(
        "--save-snapshot", action="store_true",
        # Read-only otherwise: the api service stores a fresh snapshot every api.snapshot_every_events.
        help="also store the folded state as the snapshot (the api service does so as the log grows)",
    )
    add_common_arguments(parser)
    parser.set_defaults(func=run)


def progress_on_stderr(count: int) -> None:
    """Progress of a long fold, for people watching a terminal."""
    if sys.stderr.isatty():
        print(f"rr: folded {count:,} events ...", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Fold the log (from the snapshot when there is one) and print the status."""
    options = common_options(args)

    async def go() -> Rebuilt[bundle.ProjectionSet]:
        async with open_bus(options, "status") as bus:
            candidates = await load_candidates(await asyncio.to_thread(load_config, options.config_path))
            rebuilt: Rebuilt[bundle.ProjectionSet] = await state_at_seq(bus, use_snapshot=not args.no_snapshot, progress=progress_on_stderr,
                                         candidates=candidates)
            if args.save_snapshot:
                await store(bus, bundle.PROJECTION, rebuilt.state)
            return rebuilt

    rebuilt = asyncio.run(go())
    if rebuilt.snapshot_ignored:
        print(f"rr: {rebuilt.snapshot_ignored}; folded the whole log", file=sys.stderr)
    elif rebuilt.folded >= SLOW_FOLD_HINT and not args.save_snapshot:
        print(f"rr: folded {rebuilt.folded:,} events past the snapshot; the api service keeps it fresh "
              "(or pass --save-snapshot)", file=sys.stderr)
    print_view(status_view(rebuilt.state, now=utcnow(), node_id=options.node_id), args.json)
    return 0


def print_view(view: StatusView, as_json: bool) -> None:
    """The status as JSON or as tables."""
    if as_json:
        print(msgspec.json.encode(view).decode())
    else:
        print(format_status(view))


def table(rows: Sequence[tuple[str, ...]]) -> str:
    """Left-aligned columns, two spaces apart; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def when(value: dt.datetime | None) -> str:
    """A time for a table: UTC, to the second."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def age(seconds: float | None) -> str:
    """125.0 -> '2m05s ago', 90000.0 -> '1d01h ago'."""
    if seconds is None:
        return "-"
    s = int(max(seconds, 0))
    if s >= 86400:
        text = f"{s // 86400}d{s % 86400 // 3600:02d}h"
    elif s >= 3600:
        text = f"{s // 3600}h{s % 3600 // 60:02d}m"
    else:
        text = f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    return f"{text} ago"


def _leaders(view: StatusView) -> list[str]:
    lines = [f"leader:  {view.leader_id or 'none'}  (alive peers {view.alive_peers} of {len(view.nodes)} nodes)"]
    for role, lead in view.leaders.items():
        who = f"{lead.node} (epoch {lead.epoch}, since {when(lead.since)})" if lead.node else f"none since {when(lead.since)}: {lead.reason}"
        lines.append(f"  {role}: {who}")
    return lines


def _nodes(view: StatusView) -> list[str]:
    if not view.nodes:
        return ["nodes:   none seen"]
    rows = [("NODE", "STATUS", "SINCE", "ROLES", "VERSION", "GPUS", "WORK", "REASON")]
    for n in view.nodes:
        gpus = f"{len(n.gpus)}x {n.gpus[0]}" if n.gpus else "-"
        work = " ".join(f"{k} {v}" for k, v in sorted(n.work.items())) or "-"
        reason = n.reason + (f" (silent {n.silence_s:.1f}s)" if not n.alive and n.silence_s else "")
        lead = f" [leads {','.join(n.leads)}]" if n.leads else ""
        rows.append((n.node_id + lead, n.status, when(n.since), ",".join(n.roles) or "-", n.version or "-", gpus, work, reason))
    return [table(rows)]


def _work(view: StatusView) -> list[str]:
    states = list(view.work.counts)
    lines = ["work:    " + "  ".join(f"{s} {n}" for s, n in view.work.counts.items())]
    if view.work.by_config:
        rows = [("CONFIG", *(s.upper() for s in states))]
        rows += [(c, *(str(per.get(s, 0)) for s in states)) for c, per in view.work.by_config.items()]
        lines.append(table(rows))
    return lines


def _models_and_data(view: StatusView) -> list[str]:
    lines = []
    if view.models:
        rows: list[tuple[str, ...]] = [("CONFIG", "MODEL", "GEN", "ELO", "NODES", "DISTRIBUTED", "SHA256")]
        for c, m in view.models.items():
            elo = "-" if m.elo is None else f"{m.elo:.0f} ± {m.elo_interval:.0f}" if m.elo_interval else f"{m.elo:.0f}"
            done = "complete" if m.distribution_complete else "in progress"
            rows.append((c, m.model_id, str(m.generation), elo, str(len(m.nodes)), done, m.sha256[:12]))
        lines.append(table(rows))
    if view.data:
        rows = [("CONFIG", "BATCHES", "GAMES", "NEWEST BATCH", "AGE")]
        rows += [(c, str(d.batches), str(d.games), when(d.newest_at), age(d.freshness_s)) for c, d in view.data.items()]
        lines.append(table(rows))
    return lines


def format_status(view: StatusView) -> str:
    """The status for people: leaders, a node table, work counts, models, data, anomalies."""
    lines = [f"rr status as of seq {view.last_seq} ({when(view.as_of)} UTC)", *_leaders(view), ""]
    lines += [*_nodes(view), "", *_work(view)]
    extra = _models_and_data(view)
    lines += ["", *extra] if extra else []
    if view.transfers:
        lines.append("syncs:   " + "  ".join(f"{s} {n}" for s, n in view.transfers.items()))
    lines.append(f"anomalies: {view.anomalies}   fenced stale decisions: {view.fenced_decisions}")
    for a in view.recent_anomalies[-3:]:
        lines.append(f"  seq {a.seq} {a.type} {a.about}: {a.reason}")
    return "\n".join(lines)
