"""One node's side of data sync: upload the batches planned from it, download and verify those planned to it.

Workers only dial out to NATS, so a batch moves through the `rr_data` object store: the
source puts it there once (a batch already stored with the same content is not uploaded
again), the target polls for it, downloads it, checks size and SHA-256 against the
SELFPLAY_COMPLETE that announced it, writes it to <data dir>/sync/<config>/ atomically and
ends the transfer with DATA_SYNC_COMPLETE. A corrupt stored version is deleted so the next
plan uploads it afresh. State lives in the log, so a restarted node picks up where it was.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from config.nodedirs import INCOMING, batch_path
from config.sections.sync import SyncSettings
from eventbus.connection import Bus
from eventbus.errors import BusError
from eventbus.events import ArtifactRef, DataSyncComplete, Event, WorkAttemptFailed, WorkCompleted, WorkStarted, utcnow
from eventbus.objectdelete import delete_object
from eventbus.objects import BucketSpec, ObjectCorrupt, ObjectMissing, ensure_bucket
from eventbus.publisher import Publisher
from projections import data, taint
from projections.base import Folder
from projections.data import Batch, Transfer, TransferStatus
from projections.fence import believing
from projections.syncwork import SYNC_REQUESTS, SyncDone, SyncFailed, SyncRequest, served_here, sync_step
from servicekit import fileplace
from servicekit.filehash import sha256_file
from servicekit.livefold import (
    LiveFold,
    aggregate_subjects,
    believing_only,
    read_subjects,
    reconcile_while_following,
    taint_subjects,
)
from servicekit.retry import RetryTable
from servicekit.taintoffloop import tainted_off_loop
from servicekit.waits import until_first
from services.sync.uploads import BatchUploads

log = logging.getLogger(__name__)

# What the catch-up reads, one consumer per filter (servicekit/livefold.py); the benchmarks read the same.
# The work types its folds read (a `sync` item's life), not every progress report.
CATCHUP_SUBJECTS = (*aggregate_subjects("data", "leader", "lease"),
                    *read_subjects("work", data.PROJECTION, SYNC_REQUESTS, taint.PROJECTION), *taint_subjects())
GIB = 1 << 30
HOUR = 3600.0


class SyncStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What one node's sync agent did since it started."""

    received: int
    bytes_received: int
    failed: int
    uploads: int
    uploads_skipped: int


def data_bucket(settings: SyncSettings, replicas: int) -> BucketSpec:
    """The data bucket: objects expire after `store_ttl_h`, they only carry batches between nodes."""
    return BucketSpec(name=settings.bucket, description="rr selfplay batches in transit between nodes",
                      replicas=replicas, max_bytes=int(settings.store_max_gib * GIB) or -1,
                      max_age_s=settings.store_ttl_h * HOUR)


class SyncAgent:
    """Carries out this node's part of every planned copy; `run()` until `stopping` is set."""

    def __init__(
        self, bus: Bus, publisher: Publisher, node: str, root: Path, settings: SyncSettings, *, replicas: int = 1,
        candidates: Sequence[str] = (),
    ) -> None:
        self._bus, self._publisher, self.node, self.root, self._settings = bus, publisher, node, root, settings
        self._replicas = replicas
        self._data = Folder(data.PROJECTION, believing(data.PROJECTION.initial(), candidates))  # others' plans: none
        self._requests = Folder(SYNC_REQUESTS)  # `sync` work items: served here, not by a worker process
        self._taint = Folder(taint.PROJECTION)  # a quarantined batch fails its sync item (the planner never copies it)
        folds: list[Folder[Any]] = [self._data, self._requests, self._taint]
        self._live = LiveFold(bus, folds, CATCHUP_SUBJECTS, resumed=believing_only(candidates))
        self._polls = RetryTable(settings.poll_initial_s, settings.poll_max_s)
        self._ended: set[str] = set()  # transfers this process completed (until the fold shows it)
        self._reported: dict[tuple[str, int], str] = {}  # (work id, attempt) -> "started"/"ended" by this process
        self._uploads = BatchUploads(bus, publisher, node, root, settings)
        self._counts = {"received": 0, "bytes_received": 0, "failed": 0}
        self.ready = asyncio.Event()

    def statistics(self) -> SyncStatistics:
        """Counters so far."""
        return SyncStatistics(**self._counts, **self._uploads.counts)

    async def run(self, stopping: asyncio.Event) -> None:
        """Catch up with the log, then reconcile on news, on poll timers and every `plan_interval_s`."""
        await ensure_bucket(self._bus, data_bucket(self._settings, self._replicas))
        await self._live.start()
        await reconcile_while_following(self._live, stopping, self.ready, f"sync {self.node}", self.reconcile, self._sleep)

    async def _sleep(self, stopping: asyncio.Event) -> None:
        now = time.monotonic()
        due = self._polls.next_due(now)
        timeout = min(self._settings.plan_interval_s, due - now + 0.01) if due is not None else self._settings.plan_interval_s
        await until_first(self._live.wait_changed(timeout), stopping.wait())

    def _open(self) -> list[Transfer]:
        """Unfinished copies from or to this node, oldest first; forgets ended ones the fold now shows ended."""
        planned = [t for t in self._data.state.transfers.values()
                   if t.status is TransferStatus.PLANNED and self.node in (t.from_node, t.to_node)]
        self._ended &= {t.transfer_id for t in planned}
        return sorted((t for t in planned if t.transfer_id not in self._ended), key=lambda t: t.planned_seq)

    async def reconcile(self, stopping: asyncio.Event) -> None:
        """One pass: uploads for copies planned from here, then downloads of copies planned to here."""
        state = self._data.state
        open_ = self._open()
        self._uploads.keep_only({t.transfer_id for t in open_})
        for transfer in (t for t in open_ if t.from_node == self.node):
            batch = state.batches.get(transfer.batch_id)
            if batch is not None and not stopping.is_set():
                if not await self._uploads.ensure(transfer, batch, batch.file):
                    self._ended.add(transfer.transfer_id)
        for transfer in (t for t in open_ if t.to_node == self.node):
            batch = state.batches.get(transfer.batch_id)
            if batch is None or stopping.is_set() or not self._polls.due(transfer.transfer_id, time.monotonic()):
                continue
            await self._receive(transfer, batch, batch.file)
        await self._serve_items()

    async def _serve_items(self) -> None:
        """Start, then complete or fail, the `sync` attempts assigned here as their copy stands in the data fold."""
        mine = served_here(self._requests.state, self.node)
        self._reported = {k: v for k, v in self._reported.items() if any(k == (r.work_id, r.attempt) for r in mine)}
        for request in mine:
            key = (request.work_id, request.attempt)
            if self._reported.get(key) == "ended":
                continue
            if request.started < request.attempt and key not in self._reported:
                if not await self._report(WorkStarted(work_id=request.work_id, node=self.node, attempt=request.attempt)):
                    continue
                self._reported[key] = "started"
            step = sync_step(request.batch_id, self.node, self._data.state, (await tainted_off_loop(self._taint.state)).batches)
            if isinstance(step, SyncDone):
                end: Event = WorkCompleted(work_id=request.work_id, node=self.node, attempt=request.attempt,
                                           outputs=self._received_ref(request))
            elif isinstance(step, SyncFailed):
                end = WorkAttemptFailed(work_id=request.work_id, node=self.node, attempt=request.attempt, reason=step.reason)
            else:
                continue
            if await self._report(end):
                self._reported[key] = "ended"
                log.info("sync %s: work %s (%s) %s", self.node, request.work_id, request.batch_id,
                         "done" if isinstance(step, SyncDone) else f"failed: {step.reason}")

    def _received_ref(self, request: SyncRequest) -> list[ArtifactRef]:
        """Where the copied batch lies on this node, for WORK_COMPLETED (none when it was made here)."""
        batch = self._data.state.batches.get(request.batch_id)
        origin = batch.file if batch is not None else None
        if batch is None or batch.node == self.node:
            return [origin] if origin is not None else []
        path = batch_path(self.root, batch, origin.path if origin is not None else "")
        return [ArtifactRef(path=str(path), size_bytes=batch.size_bytes, sha256=batch.sha256, node=self.node)]

    async def _report(self, event: Event) -> bool:
        try:
            await self._publisher.publish(event)
        except BusError as exc:
            log.warning("sync %s: %s of %s not published yet: %s", self.node, event.type_name(),
                        getattr(event, "transfer_id", None) or getattr(event, "work_id", ""), exc)
            return False
        return True

    async def _receive(self, transfer: Transfer, batch: Batch, origin: ArtifactRef | None) -> None:
        final = batch_path(self.root, batch, origin.path if origin is not None else "")
        started = time.perf_counter()
        try:
            if await asyncio.to_thread(_holds, final, batch):
                await self._complete(transfer, batch, time.perf_counter() - started)  # received before a restart
                return
            await self._fetch(transfer, batch, final)
        except ObjectMissing:
            await self._waiting(transfer)
            return
        except ObjectCorrupt as exc:
            # Marked deleted only: a node may not delete messages; the leader's clean-up takes the chunks.
            await delete_object(self._bus, self._settings.bucket, batch.batch_id, only_nuid=exc.nuid, chunks=False)
            await self._fail(transfer, f"{exc}; deleted from the store, the next plan uploads it again")
            return
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            await self._fail(transfer, f"{'disk full' if full else 'cannot write'} in {self.root}: {exc.strerror or exc}")
            return
        except BusError as exc:
            self._polls.failed(transfer.transfer_id, time.monotonic())  # the bus again: retried, not failed
            log.warning("sync %s: %s: %s", self.node, transfer.transfer_id, exc)
            return
        self._counts["received"] += 1
        self._counts["bytes_received"] += batch.size_bytes
        await self._complete(transfer, batch, time.perf_counter() - started)

    async def _fetch(self, transfer: Transfer, batch: Batch, final: Path) -> None:
        temp = await asyncio.to_thread(fileplace.incoming, self.root / INCOMING, f"{final.name}.part")
        free = await asyncio.to_thread(fileplace.free_bytes, self.root)
        if free < batch.size_bytes:
            raise OSError(errno.ENOSPC, f"{free} bytes free, the batch has {batch.size_bytes}")
        await fileplace.fetch_and_place(self._bus, self._settings.bucket, batch.batch_id, temp, final, expect_sha256=batch.sha256,
                                        expect_size=batch.size_bytes or None, idle_timeout_s=self._settings.idle_timeout_s)

    async def _waiting(self, transfer: Transfer) -> None:
        planned = transfer.planned_at
        waited = (utcnow() - planned).total_seconds() if planned else 0.0
        if waited < self._settings.transfer_timeout_s:
            self._polls.failed(transfer.transfer_id, time.monotonic())  # poll again, less often
            return
        await self._fail(transfer, f"batch never reached the store within {self._settings.transfer_timeout_s:g}s of the plan")

    async def _fail(self, transfer: Transfer, error: str) -> None:
        self._counts["failed"] += 1
        log.warning("sync %s: %s failed: %s", self.node, transfer.transfer_id, error)
        await self._end(DataSyncComplete(batch_id=transfer.batch_id, transfer_id=transfer.transfer_id,
                                         to_node=transfer.to_node, ok=False, error=error))

    async def _complete(self, transfer: Transfer, batch: Batch, seconds: float) -> None:
        log.info("sync %s: %s received (%d bytes in %.2fs)", self.node, transfer.transfer_id, batch.size_bytes, seconds)
        await self._end(DataSyncComplete(batch_id=transfer.batch_id, transfer_id=transfer.transfer_id, to_node=self.node,
                                         ok=True, sha256=batch.sha256, size_bytes=batch.size_bytes, seconds=round(seconds, 3)))

    async def _end(self, event: DataSyncComplete) -> None:
        if not await self._report(event):
            return
        self._ended.add(event.transfer_id)
        self._polls.succeeded(event.transfer_id)


def _holds(path: Path, batch: Batch) -> bool:
    """Whether `path` already is the batch, verified (blocking)."""
    if not path.is_file() or (batch.size_bytes and path.stat().st_size != batch.size_bytes):
        return False
    return not batch.sha256 or sha256_file(path)[1] == batch.sha256
