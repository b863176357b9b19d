"""The sync planner's core, pure: which batches to copy to which training nodes now.

Rules, in order:
  * a batch is copied to a training node that does not hold it, from an alive node that does
    (its origin first), if it is younger than `max_batch_age_h` and names a file;
  * a (batch, node) pair is never planned while a copy of it is in flight or done; after a
    failed copy it is planned again, with a new transfer id, once `retry_after_s` doubled per
    failure has passed since the failed plan;
  * batches only ephemeral nodes hold go first (they may vanish), then the newest first;
  * at most `max_inflight_per_node` unfinished copies per target, `max_plans_per_tick` per call;
  * a copy an operator requested (a `sync` work item) goes to its alive target whatever its roles
    and the batch's age, first of all.
Transfer ids are `<batch>><node>#<attempt>`: deterministic, so a new leader folding the same
log numbers the next attempt the same way.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Container, Iterable

import msgspec

from config.sections.sync import SyncSettings
from eventbus.events import DataSyncPlanned
from projections.data import Batch, DataState, Transfer, TransferStatus, is_live
from servicekit.retry import delay_s


class Fleet(msgspec.Struct, frozen=True, kw_only=True):
    """What the planner needs to know about nodes now."""

    targets: frozenset[str]  # alive training nodes
    alive: frozenset[str]
    ephemeral: frozenset[str] = frozenset()


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """One copy that may be planned."""

    batch: Batch
    target: str
    source: str
    attempt: int
    at_risk: bool  # every alive holder is ephemeral


def pair_history(transfers: Iterable[Transfer]) -> dict[tuple[str, str], list[Transfer]]:
    """Every plan of each (batch, target) pair, oldest first."""
    history: dict[tuple[str, str], list[Transfer]] = {}
    for transfer in sorted(transfers, key=lambda t: t.planned_seq):
        history.setdefault((transfer.batch_id, transfer.to_node), []).append(transfer)
    return history


def may_plan(past: list[Transfer], now: dt.datetime, settings: SyncSettings) -> bool:
    """Whether the pair may be planned again: none in flight or done, and the backoff after failures passed."""
    if any(t.status is not TransferStatus.FAILED for t in past):
        return False
    if not past:
        return True
    wait = delay_s(len(past), settings.retry_after_s, settings.retry_max_s)
    last = past[-1].planned_at
    return last is None or now >= last + dt.timedelta(seconds=wait)


def pick_source(batch: Batch, fleet: Fleet) -> str | None:
    """The batch's origin if alive, else the first alive holder; None when no holder is alive."""
    if batch.node in fleet.alive and batch.node in batch.nodes:
        return batch.node
    return next((n for n in sorted(batch.nodes) if n in fleet.alive), None)


def candidates(data: DataState, fleet: Fleet, now: dt.datetime, settings: SyncSettings,
               requested: frozenset[tuple[str, str]] = frozenset()) -> list[Candidate]:
    """Every copy allowed now, most urgent first; `requested` (batch, target) pairs first of all."""
    horizon = now - dt.timedelta(hours=settings.max_batch_age_h)
    asked = {target: {b for b, t in requested if t == target} for _, target in requested} if requested else {}
    wanted = {b for batches in asked.values() for b in batches}
    fresh = [b for b in data.batches.values()
             if (b.at is None or b.at >= horizon or b.batch_id in wanted) and (b.sha256 or b.size_bytes) and is_live(data, b)]
    fresh_ids = {b.batch_id for b in fresh}
    history = pair_history(t for t in data.transfers.values() if t.batch_id in fresh_ids)
    found = []
    for batch in fresh:
        source = pick_source(batch, fleet)
        if source is None:
            continue
        at_risk = all(n in fleet.ephemeral for n in batch.nodes if n in fleet.alive)
        fresh_enough = batch.at is None or batch.at >= horizon
        targets = (fleet.targets if fresh_enough else set()) | {t for t, bs in asked.items() if batch.batch_id in bs and t in fleet.alive}
        for target in sorted(targets - set(batch.nodes)):
            past = history.get((batch.batch_id, target), [])
            if may_plan(past, now, settings):
                found.append(Candidate(batch=batch, target=target, source=source, attempt=len(past) + 1, at_risk=at_risk))
    found.sort(key=lambda c: ((c.batch.batch_id, c.target) not in requested, not c.at_risk, -c.batch.seq, c.target))
    return found


def transfer_id(batch_id: str, target: str, attempt: int) -> str:
    """The id of a batch's `attempt`-th planned copy to a node."""
    return f"{batch_id}>{target}#{attempt}"


def _reason(c: Candidate, requested: frozenset[tuple[str, str]]) -> str:
    if (c.batch.batch_id, c.target) in requested:
        why = "requested by a sync work item"
    else:
        why = "only ephemeral nodes hold it" if c.at_risk else "fresh data for training"
    return why + (f"; attempt {c.attempt} after failed copies" if c.attempt > 1 else "")


def plan_transfers(data: DataState, fleet: Fleet, now: dt.datetime, settings: SyncSettings,
                   tainted: Container[str] = frozenset(),
                   requested: frozenset[tuple[str, str]] = frozenset()) -> list[DataSyncPlanned]:
    """DATA_SYNC_PLANNED decisions to publish now (without epoch: the term adds it); tainted batches are not copied.

    `requested`: (batch, target) pairs of assigned `sync` work items, planned first and to any alive target.
    """
    inflight = Counter(t.to_node for t in data.transfers.values() if t.status is TransferStatus.PLANNED)
    plans: list[DataSyncPlanned] = []
    for c in candidates(data, fleet, now, settings, requested):
        if len(plans) >= settings.max_plans_per_tick:
            break
        if c.batch.batch_id in tainted:
            continue
        if inflight[c.target] >= settings.max_inflight_per_node:
            continue
        inflight[c.target] += 1
        plans.append(DataSyncPlanned(
            batch_id=c.batch.batch_id, transfer_id=transfer_id(c.batch.batch_id, c.target, c.attempt),
            from_node=c.source, to_node=c.target, size_bytes=c.batch.size_bytes, reason=_reason(c, requested),
        ))
    return plans
