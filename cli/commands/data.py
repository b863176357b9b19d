"""`rr data`: game data per config (batches, games, freshness), the newest batches and where their copies are."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt

import msgspec

from cli.commands import open_bus
from cli.commands.status import age, table
from cli.nouns import summary
from eventbus.events import utcnow
from projections import data, taint, withdrawal
from projections.base import Folder
from projections.data import DataState, TransferStatus, freshness_s
from projections.taint import Tainted
from servicekit.livefold import LiveFold, aggregate_subjects, taint_subjects, type_subjects
from servicekit.options import add_common_arguments, common_options


class ConfigRow(msgspec.Struct, frozen=True, kw_only=True):
    """One config's game data."""

    config: str
    batches: int
    games: int
    samples: int
    bytes: int
    newest_batch: str
    freshness_s: float | None  # seconds since its newest batch


class BatchRow(msgspec.Struct, frozen=True, kw_only=True):
    """One batch and the nodes holding it."""

    batch_id: str
    config: str
    node: str  # where selfplay wrote it
    games: int
    size_bytes: int
    sha256: str
    age_s: float | None
    nodes: list[str]  # origin plus verified copies
    copying_to: list[str]  # planned copies not finished yet
    taint: str = ""  # why it is quarantined ("" when it is not): training and sync skip it


class DataView(msgspec.Struct, frozen=True, kw_only=True):
    """What `rr data` shows."""

    configs: list[ConfigRow]
    batches: list[BatchRow]  # newest first, at most --limit
    total_batches: int  # live ones
    transfers: dict[str, int]  # planned / done / failed -> count
    withdrawn_batches: int = 0  # batches of items that ended failed or cancelled: kept, not counted
    retired_batches: int = 0  # settled batches that left the fold: counted in the totals, not listed


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr data`."""
    parser = subparsers.add_parser("data", help=summary("data"))
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="newest batches to list (default 20)")
    add_common_arguments(parser)
    parser.set_defaults(func=run)


def data_view(state: DataState, now: dt.datetime, limit: int, tainted: Tainted = Tainted()) -> DataView:
    """Configs, the newest `limit` batches and transfer counts, from the data fold."""
    copying: dict[str, list[str]] = {}
    live = [b for b in state.batches.values() if data.is_live(state, b)]
    for transfer in state.transfers.values():
        if transfer.status is TransferStatus.PLANNED:
            copying.setdefault(transfer.batch_id, []).append(transfer.to_node)
    configs = [
        ConfigRow(config=c.config, batches=c.batches, games=c.games, samples=c.samples, bytes=c.bytes,
                  newest_batch=c.newest_batch, freshness_s=freshness_s(c, now))
        for c in sorted(state.configs.values(), key=lambda c: c.config)
    ]
    newest = sorted(live, key=lambda b: b.seq, reverse=True)[: max(limit, 0)]
    batches = [
        BatchRow(batch_id=b.batch_id, config=b.config, node=b.node, games=b.num_games, size_bytes=b.size_bytes,
                 sha256=b.sha256, age_s=(now - b.at).total_seconds() if b.at else None, nodes=list(b.nodes),
                 copying_to=sorted(copying.get(b.batch_id, [])),
                 taint=tainted.batches[b.batch_id].describe() if b.batch_id in tainted.batches else "")
        for b in newest
    ]
    return DataView(configs=configs, batches=batches, total_batches=sum(c.batches for c in configs),
                    transfers=dict(state.transfer_counts), withdrawn_batches=len(state.batches) - len(live),
                    retired_batches=len(state.retired))


def format_data(view: DataView) -> str:
    """The view as tables for people."""
    if not view.configs:
        return "no selfplay batch in the log yet"
    configs = [("CONFIG", "BATCHES", "GAMES", "SAMPLES", "SIZE", "NEWEST", "FRESHNESS")]
    configs += [(c.config, str(c.batches), str(c.games), str(c.samples), f"{c.bytes / 2**20:.1f}M", c.newest_batch,
                 age(c.freshness_s)) for c in view.configs]
    batches = [("BATCH", "CONFIG", "FROM", "GAMES", "SIZE", "AGE", "ON NODES", "COPYING TO", "TAINTED")]
    batches += [(b.batch_id, b.config, b.node, str(b.games), f"{b.size_bytes / 2**20:.1f}M", age(b.age_s),
                 ",".join(b.nodes), ",".join(b.copying_to) or "-", b.taint or "-") for b in view.batches]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(view.transfers.items())) or "none"
    return "\n".join([
        table(configs), "", f"newest {len(view.batches)} of {view.total_batches} batches:", table(batches), "",
        f"transfers: {counts}",
        *([f"not counted: {view.withdrawn_batches} batch(es) of items that ended failed or cancelled"]
          if view.withdrawn_batches else []),
        *([f"retired: {view.retired_batches} settled batch(es) left the fold (counted above, not listed; "
           "rr events or rr timeline --work read one from the log)"] if view.retired_batches else []),
    ])


def run(args: argparse.Namespace) -> int:
    """Fold the data events of the log and print the view."""
    options = common_options(args)

    async def go() -> DataView:
        fold, marks = Folder(data.PROJECTION), Folder(taint.PROJECTION)
        async with open_bus(options, "data") as bus:
            subjects = (*aggregate_subjects("data", "leader", "lease"), *type_subjects(withdrawal.READS), *taint_subjects())
            await LiveFold(bus, [fold, marks], subjects).catch_up()
        return data_view(fold.state, utcnow(), args.limit, taint.tainted(marks.state))

    view = asyncio.run(go())
    print(msgspec.json.encode(view).decode() if args.json else format_data(view))
    return 0
