"""`rr quarantine node|batch|model|lift|list`: distrust outputs after the fact, and see what that taints.

Appends OUTPUTS_QUARANTINED (or QUARANTINE_LIFTED) with the reason and who asked; the taint
projection follows the lineage forward from it. The leader's distribution loop rolls a
tainted promoted model back to the newest untainted one; training and sync skip tainted batches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys

import msgspec

from cli.commands import open_bus
from cli.commands.replay import point_in_time
from cli.nouns import summary
from eventbus.connection import Bus
from eventbus.events import Event, OutputsQuarantined, QuarantineLifted
from eventbus.publisher import Publisher
from projections import taint
from servicekit.options import CommonOptions, add_common_arguments, common_options
from servicekit.rebuild import state_at_seq


class QuarantineView(msgspec.Struct, frozen=True, kw_only=True):
    """`rr quarantine list`: every quarantine, and what the ones in force taint."""

    quarantines: list[taint.Quarantine]
    tainted_batches: dict[str, str]  # batch id -> why
    tainted_models: dict[str, str]  # model id -> why
    tainted_evaluations: dict[str, str] = {}  # evaluation work id -> why: its scores no longer count


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr quarantine`."""
    parser = subparsers.add_parser("quarantine", help=summary("quarantine"))
    verbs = parser.add_subparsers(dest="verb", required=True)
    node = verbs.add_parser("node", help="a node's batches, models and evaluations reported at or after --since")
    node.add_argument("target", metavar="NODE")
    node.add_argument("--since", type=point_in_time, required=True, metavar="TIME", help="ISO 8601 time or an age (2h ago)")
    for kind in ("batch", "model"):
        verb = verbs.add_parser(kind, help=f"one {kind} and what derives from it")
        verb.add_argument("target", metavar=kind.upper())
    for verb in (node, verbs.choices["batch"], verbs.choices["model"]):
        verb.add_argument("--reason", required=True, help="why: recorded in the event, shown wherever the taint is")
    lift = verbs.add_parser("lift", help="withdraw a quarantine (what it tainted is trusted again)")
    lift.add_argument("target", metavar="QUARANTINE_ID")
    lift.add_argument("--reason", default="", help="why it is lifted")
    verbs.add_parser("list", help="the quarantines and what the ones in force taint")
    for verb in verbs.choices.values():
        verb.add_argument("--json", action="store_true", help="one JSON object")
        add_common_arguments(verb)
        verb.set_defaults(func=run)


def event_for(args: argparse.Namespace, requested_by: str) -> Event:
    """The event a `rr quarantine` verb appends."""
    if args.verb == "lift":
        return QuarantineLifted(quarantine_id=args.target, reason=args.reason, requested_by=requested_by)
    return OutputsQuarantined(
        quarantine_id=f"q-{secrets.token_hex(4)}", kind=args.verb, target=args.target, reason=args.reason,
        since=getattr(args, "since", None), requested_by=requested_by,
    )


def view_of(state: taint.TaintState) -> QuarantineView:
    """The quarantines in log order and the tainted outputs with their reasons."""
    found = taint.tainted(state)
    return QuarantineView(
        quarantines=sorted(state.quarantines.values(), key=lambda q: q.seq),
        tainted_batches={b: t.describe() for b, t in sorted(found.batches.items())},
        tainted_models={m: t.describe() for m, t in sorted(found.models.items())},
        tainted_evaluations={e: t.describe() for e, t in sorted(found.evaluations.items())},
    )


def format_view(view: QuarantineView) -> str:
    """The view for people: one line per quarantine, then the tainted outputs."""
    if not view.quarantines:
        return "no quarantine in the log"
    lines = []
    for q in view.quarantines:
        since = f" since {q.since.isoformat()}" if q.since else ""
        state = f"LIFTED ({q.lifted_reason or 'no reason given'})" if q.lifted else "in force"
        lines.append(f"{q.quarantine_id}  {q.kind} {q.target}{since} by {q.requested_by or '?'}: {q.reason}  [{state}]")
    lines.append(f"tainted models ({len(view.tainted_models)}):")
    lines += [f"  {m}: {why}" for m, why in view.tainted_models.items()]
    lines.append(f"tainted batches ({len(view.tainted_batches)}):")
    lines += [f"  {b}: {why}" for b, why in view.tainted_batches.items()]
    lines.append(f"tainted evaluations ({len(view.tainted_evaluations)}):")
    lines += [f"  {e}: {why}" for e, why in view.tainted_evaluations.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Append the quarantine (or its lifting) and print what is tainted now; exit 1 for an unknown quarantine id."""
    options = common_options(args)
    view, problem = asyncio.run(_go(options, args))
    if problem:
        print(f"rr quarantine: {problem}", file=sys.stderr)
        return 1
    print(json.dumps(msgspec.to_builtins(view)) if args.json else format_view(view))
    return 0


async def _go(options: CommonOptions, args: argparse.Namespace) -> tuple[QuarantineView, str]:
    async with open_bus(options, "quarantine") as bus:
        state = await _taint_state(bus)
        if args.verb == "lift" and state.quarantines.get(args.target) is None:
            return view_of(state), f"no quarantine {args.target} (see `rr quarantine list`)"
        if args.verb != "list":
            await Publisher(bus).publish(event_for(args, options.node_id))
            state = await _taint_state(bus)
        return view_of(state), ""


async def _taint_state(bus: Bus) -> taint.TaintState:
    return (await state_at_seq(bus, taint.PROJECTION)).state
