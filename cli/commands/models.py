"""`rr models`: per config, the promoted model, its generation and sha256, and which nodes hold a verified copy."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt

import msgspec

from cli.commands import open_bus
from cli.commands.status import age, table
from cli.nouns import summary
from cluster.distribution.failures import FAILURES, FailuresState
from eventbus.events import utcnow
from projections import cluster, elo, models, taint
from projections.base import Folder
from projections.cluster import ClusterState
from projections.elo import EloState
from projections.models import ModelsState
from projections.taint import Tainted
from servicekit.livefold import LiveFold, aggregate_subjects, taint_subjects
from servicekit.options import add_common_arguments, common_options
from services.leader.completion import needs_models, waiting_for


class ModelRow(msgspec.Struct, frozen=True, kw_only=True):
    """One config's promoted model and where it is."""

    config: str
    model_id: str
    generation: int
    sha256: str
    size_bytes: int
    promoted_at: dt.datetime | None
    promoted_age_s: float | None
    nodes: list[str]  # nodes with a verified copy
    needed_by: int  # alive nodes that need models
    waiting: list[str]  # alive nodes that need it and do not have it yet
    complete: bool  # the leader declared the distribution complete
    failures: dict[str, str]  # node -> "kind: reason" of its open failure
    taint: str = ""  # why it is quarantined ("" when it is not): the leader rolls it back
    elo: float | None = None  # on the config's scale (random play = 0)
    elo_interval: float | None = None  # half-width of its 95% interval
    anchor: str | None = None  # the config's rated pure-search anchor
    anchor_elo: float | None = None
    anchor_interval: float | None = None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr models`."""
    parser = subparsers.add_parser("models", help=summary("models"))
    parser.add_argument("--json", action="store_true", help="one JSON list of configs")
    add_common_arguments(parser)
    parser.set_defaults(func=run)


def model_rows(state: ModelsState, nodes: ClusterState, failures: FailuresState, now: dt.datetime,
               tainted: Tainted = Tainted(), ratings: EloState | None = None) -> list[ModelRow]:
    """The promoted model of every config, as `rr models` shows it, with its rating when `ratings` are given."""
    rows = []
    ratings = ratings or EloState()
    anchors = elo.anchors(ratings)
    needing = sum(1 for n in nodes.nodes.values() if n.alive and needs_models(n))
    for config, model_id in sorted(state.promoted.items()):
        model = state.models.get(model_id)
        if model is None:
            continue
        at = model.promotion.at if model.promotion else None
        open_failures = failures.open.get(model_id, {})
        rating, anchor = elo.scale_rating(ratings, model_id), anchors.get(config)
        rows.append(ModelRow(
            config=config, model_id=model_id, generation=model.promotion.generation if model.promotion else 0,
            sha256=model.sha256, size_bytes=model.size_bytes, promoted_at=at,
            promoted_age_s=(now - at).total_seconds() if at else None, nodes=list(model.nodes), needed_by=needing,
            waiting=waiting_for(state, nodes, model_id), complete=model.distribution_complete,
            failures={node: f"{f.kind}: {f.reason}" for node, f in sorted(open_failures.items())},
            taint=tainted.models[model_id].describe() if model_id in tainted.models else "",
            elo=rating.elo if rating else None, elo_interval=rating.interval if rating else None,
            anchor=anchor.model_id if anchor else None, anchor_elo=anchor.elo if anchor else None,
            anchor_interval=anchor.interval if anchor else None,
        ))
    return rows


def format_models(rows: list[ModelRow]) -> str:
    """The rows as a table for people, failures listed under it."""
    if not rows:
        return "no promoted model in the log yet"
    lines = [("CONFIG", "MODEL", "GEN", "ELO ±95%", "SHA256", "SIZE", "PROMOTED", "NODES", "COMPLETE", "WAITING FOR")]
    for r in rows:
        lines.append((
            r.config, r.model_id, str(r.generation), elo_text(r.elo, r.elo_interval), r.sha256[:12],
            f"{r.size_bytes / 2**20:.1f}M", age(r.promoted_age_s),
            f"{len(r.nodes)}: {','.join(r.nodes)}" if r.nodes else "0", "yes" if r.complete else "no",
            ",".join(r.waiting) or "-",
        ))
    failing = [f"  {r.config} on {node}: {why}" for r in rows for node, why in r.failures.items()]
    tainted = [f"  {r.config} {r.model_id}: {r.taint}" for r in rows if r.taint]
    scale = [f"  {r.config}: random play 0, pure-search anchor {r.anchor} {elo_text(r.anchor_elo, r.anchor_interval)}"
             for r in rows if r.anchor]
    return (table(lines) + ("\nElo scale per config:\n" + "\n".join(scale) if scale else "")
            + ("\nfailing:\n" + "\n".join(failing) if failing else "")
            + ("\ntainted (the leader rolls these back):\n" + "\n".join(tainted) if tainted else ""))


def elo_text(value: float | None, interval: float | None) -> str:
    """A rating with its 95% interval, e.g. '812 ± 95'; '-' when unrated."""
    if value is None:
        return "-"
    return f"{value:.0f} ± {interval:.0f}" if interval else f"{value:.0f}"


def run(args: argparse.Namespace) -> int:
    """Fold the model, host and leader events of the log and print each config's promoted model."""
    options = common_options(args)

    async def go() -> list[ModelRow]:
        folds = Folder(models.PROJECTION), Folder(cluster.PROJECTION), Folder(FAILURES), Folder(elo.PROJECTION)
        marks = Folder(taint.PROJECTION)
        async with open_bus(options, "models") as bus:
            await LiveFold(bus, [*folds, marks], (*aggregate_subjects("model", "host", "leader", "lease"), *taint_subjects())).catch_up()
        return model_rows(folds[0].state, folds[1].state, folds[2].state, utcnow(), taint.tainted(marks.state),
                          folds[3].state)

    rows = asyncio.run(go())
    print(msgspec.json.encode(rows).decode() if args.json else format_models(rows))
    return 0
