"""`sync` work items, pure: what a request to copy one batch to one node needs, and where it stands.

A `sync` item names a batch (`params.batch_id`) and the node to copy it to (`target_node`). It is
meant to be served by the target node's sync service through the `rr_data` object store, never
by a worker subprocess. These functions judge it from the data fold alone, so the planner (which
turns it into a DATA_SYNC_PLANNED copy) and the target node (which reports the outcome) decide
the same way from the same log.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

import msgspec

from eventbus.events import (
    Event,
    Scalar,
    WorkAdded,
    WorkAssigned,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
    WorkStarted,
)
from projections.base import Anomaly, Projection, total
from projections.data import DataState, TransferStatus, copies_of, is_live, is_retired
from projections.pmap import PMap

SYNC_WORK = "sync"
BATCH_PARAM = "batch_id"


class SyncDone(msgspec.Struct, frozen=True, kw_only=True):
    """The target holds the batch, verified: the item completes."""


class SyncWaiting(msgspec.Struct, frozen=True, kw_only=True):
    """The copy is planned and in flight (or not planned yet, `planned` False): wait."""

    planned: bool


class SyncFailed(msgspec.Struct, frozen=True, kw_only=True):
    """The item cannot be served; `reason` says why and what to do."""

    reason: str


SyncStep = SyncDone | SyncWaiting | SyncFailed


def missing_fields(params: Mapping[str, Scalar], target_node: str | None) -> list[tuple[str, str]]:
    """(field, what is missing) for each thing a `sync` request must name; empty when it names both."""
    out = []
    batch = params.get(BATCH_PARAM)
    if not isinstance(batch, str) or not batch:
        out.append((f"params.{BATCH_PARAM}", "missing: sync copies one batch, name it (a SELFPLAY_COMPLETE batch id)"))
    if not target_node:
        out.append(("target_node", "missing: sync copies to one node, name it"))
    return out


def sync_step(batch_id: str, target: str, data: DataState, tainted: Container[str] = frozenset()) -> SyncStep:
    """Where copying `batch_id` to `target` stands in the data fold.

    Done once the target holds the batch; failed when the batch is unknown, withdrawn, tainted or
    its newest copy to the target failed; waiting while a copy is planned, or none is yet.
    """
    batch = data.batches.get(batch_id)
    if batch is None and is_retired(data, batch_id):
        return SyncFailed(reason=f"batch {batch_id!r} settled and retired from the data fold ({data.retire_after:,} records "
                                 "after its last copy): it is not copied any more; copy its file by hand if a node needs it")
    if batch is None:
        return SyncFailed(reason=f"batch {batch_id!r} is not in the log: name a batch from a SELFPLAY_COMPLETE")
    if target in batch.nodes:
        return SyncDone()
    if batch_id in tainted:
        return SyncFailed(reason=f"batch {batch_id!r} is quarantined (tainted): it is not copied")
    if not is_live(data, batch):
        return SyncFailed(reason=f"batch {batch_id!r} is withdrawn: it is not copied")
    copies = [t for t in copies_of(data, batch_id) if t.to_node == target]
    if not copies:
        return SyncWaiting(planned=False)
    last = copies[-1]
    if last.status is TransferStatus.FAILED:
        return SyncFailed(reason=f"copy {last.transfer_id} failed: {last.error or 'no reason given'}")
    if last.status is TransferStatus.DONE:
        return SyncDone()
    return SyncWaiting(planned=True)


class SyncRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One open `sync` item: the batch, its target, and its current attempt (0: not assigned yet)."""

    work_id: str
    batch_id: str
    target: str
    node: str | None = None  # node of the current attempt
    attempt: int = 0
    started: int = 0  # the newest attempt a WORK_STARTED was seen for


class SyncRequestsState(msgspec.Struct, frozen=True, kw_only=True):
    """Open `sync` items by work id; an item leaves when it completes, fails or is cancelled."""

    last_seq: int = 0
    requests: PMap[str, SyncRequest] = msgspec.field(default_factory=PMap)
    anomalies: tuple[Anomaly, ...] = ()
    anomaly_count: int = 0


def _request(event: WorkAdded) -> SyncRequest | None:
    batch = event.params.get(BATCH_PARAM)
    if event.work_type != SYNC_WORK or not isinstance(batch, str) or not batch or not event.target_node:
        return None  # not a sync item, or one admission would refuse: nothing to serve
    return SyncRequest(work_id=event.work_id, batch_id=batch, target=event.target_node)


@total
def apply_sync_request(state: SyncRequestsState, event: Event, seq: int) -> SyncRequestsState:
    """Open on WORK_ADDED of a `sync` item, follow its attempts, close when the item ends."""
    requests = state.requests
    if isinstance(event, WorkAdded):
        if (request := _request(event)) is not None and event.work_id not in requests:
            requests = requests.set(event.work_id, request)
    elif (request := requests.get(getattr(event, "work_id", ""))) is not None:
        if isinstance(event, WorkAssigned) and event.attempt >= request.attempt:
            requests = requests.set(request.work_id, msgspec.structs.replace(request, node=event.node, attempt=event.attempt))
        elif isinstance(event, WorkStarted) and event.attempt > request.started:
            requests = requests.set(request.work_id, msgspec.structs.replace(request, started=event.attempt))
        elif isinstance(event, (WorkCompleted, WorkFailed, WorkCancelled)):
            requests = requests.remove(request.work_id)
    return msgspec.structs.replace(state, last_seq=seq, requests=requests)


SYNC_REQUESTS: Projection[SyncRequestsState] = Projection(
    name="sync-requests", version=1, initial=SyncRequestsState, apply=apply_sync_request,
    reads=frozenset(e.type_name() for e in (WorkAdded, WorkAssigned, WorkStarted, WorkCompleted, WorkFailed, WorkCancelled)),
)


def requested_copies(state: SyncRequestsState) -> frozenset[tuple[str, str]]:
    """(batch, target) of every assigned `sync` item: the planner copies these even to non-training nodes."""
    return frozenset((r.batch_id, r.target) for r in state.requests.values() if r.attempt > 0)


def served_here(state: SyncRequestsState, node: str) -> list[SyncRequest]:
    """The open `sync` attempts assigned to `node`, oldest item first."""
    return sorted((r for r in state.requests.values() if r.attempt > 0 and r.node == node), key=lambda r: r.work_id)
