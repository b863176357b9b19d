"""Game data: selfplay batches per config (how much, how fresh) and the sync transfers that copy them.

Settled batches retire: RETIRE_AFTER records after the last record about a batch (its report, a
copy of it planned or ended), when no copy of it is in flight and its item's results count, the
batch and its copies leave `batches` and `transfers`. The state then holds the recent and the
unsettled data, not every batch ever made. What stays of a retired batch is what its readers
still ask: its id with its games (a repeated report is still refused, lineage still counts
them) and its part of the per-config totals (`retired_totals`: `rr data`, the dashboard and a
recount read them). The rule is part of the fold, so a fold from a snapshot plus its tail equals
the fold from sequence 1.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from typing import Any

import msgspec

from eventbus.events import ArtifactRef, DataSyncComplete, DataSyncPlanned, Event, LeaderElected, LeaseWritten, SelfplayComplete
from projections import attempts as attempt_rule
from projections import retiring, withdrawal
from projections.attempts import Attempts, late
from projections.base import Anomaly, Projection, config_key, rejected, total
from projections.fence import Fence, judged
from projections.packedmap import PackedMap, added, packable
from projections.pmap import PMap
from projections.withdrawal import Withdrawals

# 2: batches of failed or cancelled items do not count (projections/withdrawal.py)
# 3: batches of superseded attempts are anomalies (projections/attempts.py)
# 4: settled batches and their copies retire RETIRE_AFTER records after the last record about them;
#    a batch keeps its file (the sync agents' batch-files fold before, which never retired)
# 5: completed items' attempts retire (projections/attempts.py)
# 6: retired batches packed, one string per hash bucket (projections/packedmap.py), not a dict entry each
VERSION = 6

# A batch leaves the state this many records after the last record about it (about 60 hours of the
# fleet's ~60k records a day, past the planner's default `sync.max_batch_age_h` of 48: a batch the
# planner may still copy to a training node that joins stays), if no copy of it is in flight and
# its item's results count (a withdrawn batch may count again; it is looked at again later).
RETIRE_AFTER = 150_000


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """One selfplay batch: who made it, from which work item and model, and which nodes hold it."""

    batch_id: str
    work_id: str
    node: str
    board_type: str
    num_players: int
    num_games: int
    num_samples: int = 0
    model_id: str | None = None
    sha256: str = ""
    size_bytes: int = 0
    seq: int = 0
    at: dt.datetime | None = None
    nodes: tuple[str, ...] = ()  # sorted: where it was written plus verified copies
    file: ArtifactRef | None = None  # where selfplay wrote it, with its node (None: the report named no file)

    @property
    def config(self) -> str:
        """Its training config, e.g. hex8_2p."""
        return config_key(self.board_type, self.num_players)


class ConfigData(msgspec.Struct, frozen=True, kw_only=True):
    """How much live game data a config has, and how fresh its newest live batch is (withdrawn batches do not count)."""

    config: str
    batches: int = 0
    games: int = 0
    samples: int = 0
    newest_at: dt.datetime | None = None
    newest_seq: int = 0
    newest_batch: str = ""
    bytes: int = 0  # size of the live batches


class TransferStatus(enum.Enum):
    """Where a planned copy of a batch is."""

    PLANNED = "planned"
    DONE = "done"
    FAILED = "failed"


class Transfer(msgspec.Struct, frozen=True, kw_only=True):
    """One planned copy of a batch from a node to another."""

    transfer_id: str
    batch_id: str
    from_node: str
    to_node: str
    size_bytes: int = 0
    status: TransferStatus = TransferStatus.PLANNED
    planned_seq: int = 0
    planned_at: dt.datetime | None = None
    seconds: float = 0.0
    error: str = ""


class DataState(msgspec.Struct, frozen=True, kw_only=True):
    """Batches and transfers by id, per-config totals and transfer counts, at stream position `last_seq`."""

    last_seq: int = 0
    batches: PMap[str, Batch] = msgspec.field(default_factory=PMap)
    configs: dict[str, ConfigData] = {}
    transfers: PMap[str, Transfer] = msgspec.field(default_factory=PMap)
    transfer_counts: dict[str, int] = {}  # transfer status value -> number
    withdrawals: Withdrawals = msgspec.field(default_factory=Withdrawals)  # items whose batches do not count
    by_work: PMap[str, tuple[str, ...]] = msgspec.field(default_factory=PMap)  # work id -> its batch ids
    fence: Fence = msgspec.field(default_factory=Fence)
    attempts: Attempts = msgspec.field(default_factory=Attempts)  # only the current attempt's results count
    anomalies: tuple[Anomaly, ...] = ()
    anomaly_count: int = 0
    copies: PMap[str, tuple[str, ...]] = msgspec.field(default_factory=PMap)  # batch id -> its transfer ids
    retire_after: int = RETIRE_AFTER
    touched: PMap[str, int] = msgspec.field(default_factory=PMap)  # batch id -> position it is looked at from
    scheduled: PMap[int, tuple[str, ...]] = msgspec.field(default_factory=PMap)  # that position -> batch ids
    retired_through: int = 0  # nothing is scheduled up to this position
    retired: PackedMap = msgspec.field(default_factory=PackedMap)  # retired batch id -> its games (`retired_games`)
    retired_totals: dict[str, ConfigData] = {}  # config -> what its retired batches count for


# The maps a rebuild may hold as plain dicts (projections/dictmap.py, the bundle's open set): the
# fold reads them by key, in whole or by `readers`, writes them only by `set` and `remove`, and
# never reads a map of a state it has already replaced by a write. `retired`, a packed map, opens its
# buckets (written by `packedmap.added` alone).
OPEN_MAPS = ("batches", "transfers", "by_work", "copies", "touched", "scheduled", "retired")


def _touched(state: DataState, batch_id: str, seq: int) -> DataState:
    """`state` with the batch looked at for retiring RETIRE_AFTER records after `seq` (not before)."""
    scheduled, before = state.scheduled, state.touched.get(batch_id)
    if before is not None:
        ids = scheduled[before]
        rest = () if ids == (batch_id,) else tuple(b for b in ids if b != batch_id)  # most positions hold one batch
        scheduled = scheduled.set(before, rest) if rest else scheduled.remove(before)
    scheduled = scheduled.set(seq, (*scheduled.get(seq, ()), batch_id))
    return msgspec.structs.replace(state, scheduled=scheduled, touched=state.touched.set(batch_id, seq))


def is_retired(state: DataState, batch_id: str) -> bool:
    """Whether the batch settled and left the state (its report and copies are in the log)."""
    return batch_id in state.retired


def retired_games(state: DataState, batch_id: str) -> int | None:
    """The games of a retired batch, None when the batch did not retire."""
    games = state.retired.get(batch_id)
    return None if games is None else int(games)


def copies_of(state: DataState, batch_id: str) -> list[Transfer]:
    """Every planned copy of the batch still held, oldest plan first."""
    return sorted((state.transfers[t] for t in state.copies.get(batch_id, ())), key=lambda t: t.planned_seq)


def selfplay_complete(state: DataState, event: SelfplayComplete, seq: int) -> DataState:
    """A new batch of games counts towards its config and makes it fresher."""
    if event.batch_id in state.batches or event.batch_id in state.retired:
        return rejected(state, seq, event, f"batch {event.batch_id} was already reported")
    data = event.data
    batch = Batch(
        batch_id=event.batch_id, work_id=event.work_id, node=event.node, board_type=event.board_type,
        num_players=event.num_players, num_games=event.num_games, num_samples=event.num_samples,
        model_id=event.model_id, sha256=data.sha256 if data else "", size_bytes=data.size_bytes if data else 0,
        seq=seq, at=event.ts, nodes=(event.node,),
        file=(data if data.node else msgspec.structs.replace(data, node=event.node)) if data else None,
    )
    configs = state.configs
    if state.withdrawals.counts(batch.work_id):  # else kept (it may count again after a late completion), not counted
        config = batch.config
        configs = {**configs, config: _counted_in(configs.get(config) or ConfigData(config=config), batch)}
    state = msgspec.structs.replace(
        state, last_seq=seq, batches=state.batches.set(batch.batch_id, batch), configs=configs,
        by_work=state.by_work.set(batch.work_id, (*state.by_work.get(batch.work_id, ()), batch.batch_id)),
    )
    return _touched(state, batch.batch_id, seq)


def _counted_in(totals: ConfigData, batch: Batch) -> ConfigData:
    newer = totals.newest_at is None or (batch.at is not None and batch.at >= totals.newest_at)
    return msgspec.structs.replace(
        totals, batches=totals.batches + 1, games=totals.games + batch.num_games,
        samples=totals.samples + batch.num_samples, bytes=totals.bytes + batch.size_bytes,
        newest_at=batch.at if newer else totals.newest_at, newest_seq=batch.seq if newer else totals.newest_seq,
        newest_batch=batch.batch_id if newer else totals.newest_batch,
    )


def is_live(state: DataState, batch: Batch) -> bool:
    """Whether a batch counts as live data (its item did not end failed or cancelled)."""
    return state.withdrawals.counts(batch.work_id)


def item_ended(state: DataState, event: Event, seq: int) -> DataState:
    """A work item ended: its batches stop (or start again) counting, by the withdrawal rule."""
    work_id: str = event.work_id  # type: ignore[attr-defined]  # every event this fold reads names its work item
    before = state.withdrawals
    withdrawals = withdrawal.apply(before, event)
    if withdrawals is before:  # the common case, a completion: its batches count as they did
        return msgspec.structs.replace(state, last_seq=seq)
    counted = before.counts(work_id)
    state = msgspec.structs.replace(state, last_seq=seq, withdrawals=withdrawals)
    batch_ids = state.by_work.get(work_id, ())
    if not batch_ids or state.withdrawals.counts(work_id) == counted:
        return state
    # Rare (an item with results that failed, or completed late): its configs are counted again.
    configs = {state.batches[b].config for b in batch_ids}
    return msgspec.structs.replace(state, configs={**state.configs, **{c: _recounted(state, c) for c in configs}})


def _recounted(state: DataState, config: str) -> ConfigData:
    totals = state.retired_totals.get(config) or ConfigData(config=config)  # retired batches counted when they retired
    for batch in sorted(state.batches.values(), key=lambda b: b.seq):
        if batch.config == config and is_live(state, batch):
            totals = _counted_in(totals, batch)
    return totals


def _counted(counts: dict[str, int], before: TransferStatus | None, after: TransferStatus) -> dict[str, int]:
    counts = dict(counts)  # `_value_`: the member's own attribute, not the `.value` property (~5x the cost)
    if before is not None:
        was = before._value_
        counts[was] -= 1
        if not counts[was]:
            del counts[was]
    now = after._value_
    counts[now] = counts.get(now, 0) + 1
    return counts


def sync_planned(state: DataState, event: DataSyncPlanned, seq: int) -> DataState:
    """The leader planned a copy (a fenced decision)."""
    if event.transfer_id in state.transfers:
        return rejected(state, seq, event, f"transfer {event.transfer_id} was already planned")
    if event.batch_id in state.retired:
        return rejected(state, seq, event, f"batch {event.batch_id} retired (settled): a copy of it is not planned any more")
    transfer = Transfer(
        transfer_id=event.transfer_id, batch_id=event.batch_id, from_node=event.from_node, to_node=event.to_node,
        size_bytes=event.size_bytes, planned_seq=seq, planned_at=event.ts,
    )
    state = msgspec.structs.replace(
        state, last_seq=seq, transfers=state.transfers.set(transfer.transfer_id, transfer),
        transfer_counts=_counted(state.transfer_counts, None, TransferStatus.PLANNED),
        copies=state.copies.set(event.batch_id, (*state.copies.get(event.batch_id, ()), transfer.transfer_id)),
    )
    return _touched(state, event.batch_id, seq)


def sync_complete(state: DataState, event: DataSyncComplete, seq: int) -> DataState:
    """A planned copy ended; a verified one adds its node to the batch's holders."""
    transfer = state.transfers.get(event.transfer_id)
    if transfer is None:
        why = "its batch retired after its copies ended" if event.batch_id in state.retired else "it was never planned"
        return rejected(state, seq, event, f"transfer {event.transfer_id}: {why}")
    if transfer.status is not TransferStatus.PLANNED:
        return rejected(state, seq, event, f"transfer {event.transfer_id} already ended ({transfer.status.value})")
    status = TransferStatus.DONE if event.ok else TransferStatus.FAILED
    done = msgspec.structs.replace(transfer, status=status, seconds=event.seconds, error=event.error)
    batches = state.batches
    batch = batches.get(event.batch_id)
    if event.ok and batch is not None and event.to_node not in batch.nodes:
        batches = batches.set(batch.batch_id, msgspec.structs.replace(batch, nodes=tuple(sorted((*batch.nodes, event.to_node)))))
    state = msgspec.structs.replace(
        state, last_seq=seq, batches=batches, transfers=state.transfers.set(done.transfer_id, done),
        transfer_counts=_counted(state.transfer_counts, TransferStatus.PLANNED, status),
    )
    return _touched(state, transfer.batch_id, seq)


# Each handler takes the one event type it is keyed by.
_HANDLERS: dict[type[Event], Callable[[DataState, Any, int], DataState]] = {
    SelfplayComplete: selfplay_complete,
    DataSyncPlanned: sync_planned,
    DataSyncComplete: sync_complete,
}


@total
def apply(state: DataState, event: Event, seq: int) -> DataState:
    """The data after one event at stream position `seq`; stale sync plans are dropped, settled batches retire."""
    state = _applied(state, event, seq)
    if seq - state.retire_after <= state.retired_through:  # nothing due: `_retire`'s own first test, without the call
        return state
    return _retire(state, seq)


def retired_due(state: DataState, seq: int) -> DataState:
    """`state` with what is due at `seq` retired: what `apply` does after an event's step."""
    if seq - state.retire_after <= state.retired_through:
        return state
    return _retire(state, seq)


def _applied(state: DataState, event: Event, seq: int) -> DataState:
    kind = type(event)  # tested by class: a type's name is a classmethod call per test
    if kind in attempt_rule.KINDS:  # which attempts may still report
        attempts = attempt_rule.learned(state.attempts, state.fence.view, event, seq)
        if kind not in withdrawal.KINDS:
            return msgspec.structs.replace(state, last_seq=seq, attempts=attempts)
        if attempts is not state.attempts:
            state = msgspec.structs.replace(state, attempts=attempts)
    state, goes_on = judged(state, event, seq)
    if not goes_on:
        return state
    return admitted(state, event, seq)


def admitted(state: DataState, event: Event, seq: int) -> DataState:
    """The data after an event its fence admitted (the attempts rule already taught by it): what `apply` does next."""
    kind = type(event)
    if kind in withdrawal.KINDS:
        return item_ended(state, event, seq)
    if kind is SelfplayComplete:
        assert isinstance(event, SelfplayComplete)
        problem = late(state.attempts, event.work_id, event.attempt, event.node)
        if problem is not None:
            return rejected(state, seq, event, problem)
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return msgspec.structs.replace(state, last_seq=seq)
    return handler(state, event, seq)


def _retire(state: DataState, seq: int) -> DataState:
    """`state` with the batches due by `seq` retired, or looked at again later when they have not settled."""
    horizon = seq - state.retire_after
    first = retiring.oldest(state.scheduled, state.retired_through, seq)
    if first > horizon:
        return msgspec.structs.replace(state, retired_through=first - 1)
    again: list[str] = []
    for position in retiring.due(state.scheduled, first, horizon):
        for batch_id in state.scheduled[position]:
            state = msgspec.structs.replace(state, touched=state.touched.remove(batch_id))
            if _settled(state, batch_id):
                state = _retired(state, batch_id)
            else:
                again.append(batch_id)
        state = msgspec.structs.replace(state, scheduled=state.scheduled.remove(position))
    for batch_id in again:  # a copy in flight, or a withdrawn item that may count again
        state = _touched(state, batch_id, seq)
    return msgspec.structs.replace(state, retired_through=retiring.oldest(state.scheduled, horizon, seq) - 1)


def _settled(state: DataState, batch_id: str) -> bool:
    """No copy of the batch is in flight and (when it was reported) its item's results count."""
    if any(state.transfers[t].status is TransferStatus.PLANNED for t in state.copies.get(batch_id, ())):
        return False
    batch = state.batches.get(batch_id)
    # A separator in its id keeps it (packedmap.packable): never settled, looked at again like one in flight.
    return batch is None or (is_live(state, batch) and packable(batch_id, ""))


def _retired(state: DataState, batch_id: str) -> DataState:
    """`state` without the batch and its copies; its id, games and part of its config's totals stay."""
    transfers = state.transfers
    for transfer_id in state.copies.get(batch_id, ()):
        transfers = transfers.remove(transfer_id)
    state = msgspec.structs.replace(state, transfers=transfers, copies=state.copies.remove(batch_id))
    batch = state.batches.get(batch_id)
    if batch is None:  # copies of a batch never reported: only they go
        return state
    rest = tuple(b for b in state.by_work.get(batch.work_id, ()) if b != batch_id)
    totals = state.retired_totals.get(batch.config) or ConfigData(config=batch.config)
    return msgspec.structs.replace(
        state, batches=state.batches.remove(batch_id), retired=added(state.retired, batch_id, str(batch.num_games)),
        by_work=state.by_work.set(batch.work_id, rest) if rest else state.by_work.remove(batch.work_id),
        retired_totals={**state.retired_totals, batch.config: _counted_in(totals, batch)},
    )


def freshness_s(config: ConfigData, now: dt.datetime) -> float | None:
    """Seconds since the config's newest batch, None when it has none."""
    return None if config.newest_at is None else (now - config.newest_at).total_seconds()


PROJECTION: Projection[DataState] = Projection(
    name="data",
    version=VERSION,
    initial=DataState,
    apply=apply,
    reads=frozenset({
        LeaderElected.type_name(), LeaseWritten.type_name(), *attempt_rule.READS, *withdrawal.READS, *(t.type_name() for t in _HANDLERS),
    }),
)
