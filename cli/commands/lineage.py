"""`rr lineage MODEL`: the batches and training job that produced a model, the evaluation that promoted it, where it is."""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from cli.commands import open_bus
from cli.commands.status import progress_on_stderr, when
from cli.nouns import summary
from projections import bundle
from projections.lineage import Lineage, lineage
from servicekit.options import add_common_arguments, common_options
from servicekit.rebuild import Rebuilt, state_at_seq


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr lineage`."""
    parser = subparsers.add_parser("lineage", help=summary("lineage"))
    parser.add_argument("model", metavar="MODEL", help="model id")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--no-snapshot", action="store_true", help="fold the whole log, ignoring the stored snapshot")
    add_common_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the lineage; exit 1 when the log never named the model."""
    options = common_options(args)

    async def go() -> Rebuilt[bundle.ProjectionSet]:
        async with open_bus(options, "lineage") as bus:
            return await state_at_seq(bus, use_snapshot=not args.no_snapshot, progress=progress_on_stderr)

    found = lineage(asyncio.run(go()).state, args.model)
    if found is None:
        print(f"rr: no event in the log names model {args.model}", file=sys.stderr)
        return 1
    print(msgspec.json.encode(found).decode() if args.json else format_lineage(found))
    return 0


def _training(found: Lineage) -> list[str]:
    t = found.training
    if t is None:
        return ["trained:   no TRAINING_COMPLETE in the log"]
    parent = f", parent {t.parent_model}" if t.parent_model else ", no parent (first generation)"
    lines = [f"trained:   by work {t.work_id} on {t.node} at {when(t.at)} (seq {t.seq}){parent}"]
    lines.append(f"from:      {len(found.batches)} selfplay batches, {found.games} games")
    for b in found.batches:
        if b.batch is None and b.known:
            tainted = f"  TAINTED: {b.taint.describe()}" if b.taint else ""
            lines.append(f"  {b.batch_id}  {b.retired_games} games (settled, retired from the data fold; "
                         f"its SELFPLAY_COMPLETE is in the log){tainted}")
            continue
        if b.batch is None:
            lines.append(f"  {b.batch_id}  (never reported by a SELFPLAY_COMPLETE)")
            continue
        played = f"played by {b.batch.model_id}" if b.batch.model_id else "random play"
        tainted = f"  TAINTED: {b.taint.describe()}" if b.taint else ""
        lines.append(
            f"  {b.batch_id}  {b.batch.num_games} games on {b.batch.node} by work {b.batch.work_id}, "
            f"{played} (seq {b.batch.seq}){tainted}"
        )
    return lines


def _evaluations(found: Lineage) -> list[str]:
    if not found.evaluations:
        return ["evaluated: never"]
    lines = ["evaluated:"]
    for r in found.evaluations:
        elo = f", elo {r.elo:.0f}" if r.elo is not None else ""
        cited = "  <- cited by the promotion" if r in found.promoting_evaluation else ""
        taint = found.tainted_evaluations.get(r.work_id)
        tainted = f"  TAINTED: {taint.describe()}" if taint else ""
        lines.append(
            f"  vs {r.opponent}: {r.wins}-{r.losses}-{r.draws} of {r.games} (win rate {r.win_rate:.2f}){elo} "
            f"by work {r.work_id} on {r.node} (seq {r.seq}){cited}{tainted}"
        )
    return lines


def _rating(found: Lineage) -> list[str]:
    r = found.rating
    if r is None:
        return ["rated:     not yet"]
    return [f"rated:     {r.elo:.0f} ± {r.interval:.0f} Elo on the {found.config} scale (random play = 0, 95% interval) "
            f"from {r.games} games vs {', '.join(r.opponents) or '?'} (seq {r.seq})"]


def _promotion(found: Lineage) -> list[str]:
    p = found.promotion
    if p is None:
        return ["promoted:  never"]
    now = "is the promoted model" if found.promoted_now else "since replaced"
    after = f" after evaluation {p.evaluation_work_id}" if p.evaluation_work_id else ""
    why = f": {p.reason}" if p.reason else ""
    return [
        f"promoted:  generation {p.generation} at {when(p.at)} (seq {p.seq}, epoch {p.epoch}, by {p.by or '?'})"
        f"{after}{why}; {now}"
    ]


def format_lineage(found: Lineage) -> str:
    """The lineage for people."""
    head = f"model {found.model_id}  {found.config or '(config unknown)'}  sha256 {found.sha256[:16] or '-'}"
    copies = ", ".join(found.nodes) or "none"
    done = " (distribution complete)" if found.distribution_complete else ""
    lines = [head, *([f"TAINTED:   {found.taint.describe()}"] if found.taint else [])]
    lines += [*_training(found), *_evaluations(found), *_rating(found), *_promotion(found),
              f"on nodes:  {copies}{done}"]
    lines.append(f"as of seq {found.as_of_seq}")
    return "\n".join(lines)
