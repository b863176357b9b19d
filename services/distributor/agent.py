"""One node's distributor: keeps the folds current and reconciles its models dir with the promotions in the log.

Each pass installs what plan.next_steps says (verified copies only, installed atomically),
announces MODEL_DISTRIBUTED, reports failures as MODEL_DISTRIBUTION_FAILED and retries them
with backoff, does this node's store duties (services/distributor/duties.py), and deletes
versions past the retention policy. A failure never stops the agent.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from cluster.distribution.failures import FAILURES
from cluster.distribution.retention import KeptVersion, current_models, promotion_history, versions_to_delete
from config.nodedirs import SUFFIX, VERSIONS, canonical_path, version_path, version_stem
from config.sections.distribution import DistributionSettings
from eventbus.connection import Bus
from eventbus.errors import BusError, BusUnavailable
from eventbus.events import ModelDistributed, ModelDistributionFailed, utcnow
from eventbus.objects import BucketSpec, ObjectCorrupt, ObjectMissing, ObjectReplaced, ensure_bucket
from eventbus.publisher import Publisher
from projections import cluster, models
from projections.base import Folder
from projections.fence import believing
from projections.models import ModelInfo, ModelsState
from servicekit import fileplace
from servicekit.filehash import copy_hashed
from servicekit.livefold import LiveFold, aggregate_subjects, believing_only, reconcile_while_following
from servicekit.retry import RetryTable
from servicekit.waits import until_first
from services.distributor import install
from services.distributor.duties import StoreDuties
from services.distributor.plan import Activate, Announce, CopyLocal, Download, Step, next_steps

log = logging.getLogger(__name__)

# What the catch-up reads, one consumer per filter (servicekit/livefold.py); the benchmarks read the same.
CATCHUP_SUBJECTS = aggregate_subjects("model", "host", "leader", "lease")

GIB = 1 << 30
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class AgentStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What one distributor did since it started."""

    installed: int
    downloaded: int
    copied: int
    bytes_downloaded: int
    failures: int
    uploads: int
    uploads_skipped: int
    repairs: int
    versions_deleted: int


def models_bucket(settings: DistributionSettings, replicas: int) -> BucketSpec:
    """The models bucket as the distributors declare it."""
    return BucketSpec(name=settings.bucket, description="rr promoted models and training candidates",
                      replicas=replicas, max_bytes=int(settings.store_max_gib * GIB) or -1)


class DistributorAgent:
    """Installs the promoted model of every config on this node; `run()` until `stopping` is set."""

    def __init__(
        self, bus: Bus, publisher: Publisher, node: str, root: Path, settings: DistributionSettings, *,
        replicas: int = 1, free_bytes: Callable[[Path], int] = fileplace.free_bytes, candidates: Sequence[str] = (),
    ) -> None:
        self._bus, self._publisher, self.node, self.root, self._settings = bus, publisher, node, root, settings
        self._replicas = replicas
        self._free_bytes = free_bytes
        # Whose elections are believed: a promotion by anyone else's "term" installs nothing.
        self._models = Folder(models.PROJECTION, believing(models.PROJECTION.initial(), candidates))
        self._cluster = Folder(cluster.PROJECTION, believing(cluster.PROJECTION.initial(), candidates))
        self._failures = Folder(FAILURES)
        folders: list[Folder[Any]] = [self._models, self._cluster, self._failures]
        self._live = LiveFold(bus, folders, CATCHUP_SUBJECTS, resumed=believing_only(candidates))
        self._retry = RetryTable(settings.retry_initial_s, settings.retry_max_s)
        self._duties = StoreDuties(bus, node, settings, self._report)
        self._announced: set[str] = set()
        self._no_local: set[str] = set()  # models whose own checkpoint could not be copied: download them
        self._counts = dict.fromkeys(AgentStatistics.__struct_fields__, 0)
        self.ready = asyncio.Event()  # set after the first pass

    def statistics(self) -> AgentStatistics:
        """Counters so far (store duties included)."""
        return AgentStatistics(**{**self._counts, **self._duties.counts})

    async def run(self, stopping: asyncio.Event) -> None:
        """Catch up with the log, then reconcile on every relevant event, backoff expiry or check interval."""
        await ensure_bucket(self._bus, models_bucket(self._settings, self._replicas))
        await self._live.start()
        self._duties.started(utcnow())
        await reconcile_while_following(self._live, stopping, self.ready, f"distributor {self.node}", self.reconcile, self._sleep)

    async def _sleep(self, stopping: asyncio.Event) -> None:
        now = time.monotonic()
        dues = [d for d in (self._retry.next_due(now), self._duties.next_due(now)) if d is not None]
        timeout = min([self._settings.check_interval_s, *(d - now + 0.01 for d in dues)])
        await until_first(self._live.wait_changed(timeout), stopping.wait())

    async def reconcile(self, stopping: asyncio.Event) -> None:
        """One pass: the store duties, then install and announce what is missing, then retention."""
        state = self._models.state
        # Uploads first: other nodes may be waiting for them.
        await self._duties.run(state, self._failures.state, self._cluster.state, self.root)
        local = await asyncio.to_thread(install.scan, self.root)
        for step in next_steps(state, local, self.node, self._no_local):
            if stopping.is_set():
                return
            if self._retry.due(step.model.model_id, time.monotonic()):
                await self._take(step)
        await self._retain(state)

    async def _take(self, step: Step) -> None:
        model = step.model
        started = time.perf_counter()
        if isinstance(step, Announce):
            if model.model_id not in self._announced:
                await self._announce(model, 0.0)
            return
        if isinstance(step, CopyLocal) and not await self._copy_local(step):
            return
        if isinstance(step, Download) and not await self._download(model):
            return
        version = version_path(self.root, model.board_type, model.num_players, model.model_id)
        await asyncio.to_thread(install.activate, self.root, model.board_type, model.num_players, version)
        if not isinstance(step, Activate):
            self._counts["installed"] += 1
        await self._announce(model, time.perf_counter() - started)

    async def _copy_local(self, step: CopyLocal) -> bool:
        model = step.model
        temp = await asyncio.to_thread(install.incoming, self.root, f"{version_stem(model.model_id)}.part")
        try:
            size, sha256 = await asyncio.to_thread(copy_hashed, Path(step.checkpoint.path), temp)
            if sha256 != model.sha256:
                raise OSError(f"checkpoint {step.checkpoint.path} has sha256 {sha256[:12]}, promoted {model.sha256[:12]}")
            await asyncio.to_thread(fileplace.place, temp, version_path(self.root, model.board_type, model.num_players, model.model_id))
        except OSError as exc:
            await asyncio.to_thread(fileplace.remove, temp)
            log.warning("distributor %s: own checkpoint of %s unusable (%s); downloading it instead", self.node, model.model_id, exc)
            self._no_local.add(model.model_id)
            return False
        self._counts["copied"] += 1
        return True

    async def _download(self, model: ModelInfo) -> bool:
        need = model.size_bytes + self._settings.free_margin_bytes
        free = await asyncio.to_thread(self._free_bytes, self.root)
        if free < need:
            await self._failed(model, "disk_full", f"{free / 2**20:.0f} MiB free in {self.root}, need {need / 2**20:.0f} MiB")
            return False
        temp = await asyncio.to_thread(install.incoming, self.root, f"{version_stem(model.model_id)}.part")
        final = version_path(self.root, model.board_type, model.num_players, model.model_id)
        try:
            fetched = await fileplace.fetch_and_place(
                self._bus, self._settings.bucket, model.model_id, temp, final, expect_sha256=model.sha256,
                expect_size=model.size_bytes or None, idle_timeout_s=self._settings.idle_timeout_s,
            )
        except (BusError, OSError) as exc:
            await self._download_failed(model, exc)
            return False
        self._counts["downloaded"] += 1
        self._counts["bytes_downloaded"] += fetched.object.size
        return True

    async def _download_failed(self, model: ModelInfo, exc: BusError | OSError) -> None:
        if isinstance(exc, ObjectReplaced):
            self._retry.failed(model.model_id, time.monotonic(), grow=False)  # a repair replaced it: read the new one
        elif isinstance(exc, ObjectMissing):
            promoted_at = model.promotion.at if model.promotion else None
            waited = (utcnow() - promoted_at).total_seconds() if promoted_at else float("inf")
            if waited < self._settings.missing_grace_s:
                self._retry.failed(model.model_id, time.monotonic(), grow=False)  # the upload is likely under way
                return
            await self._failed(model, "missing", f"{exc}; its trainer has not uploaded it")
        elif isinstance(exc, ObjectCorrupt):
            await self._failed(model, "corrupt", f"{exc}; discarded", nuid=exc.nuid)
        elif isinstance(exc, OSError) and exc.errno in NO_SPACE:
            await self._failed(model, "disk_full", f"disk full writing into {self.root}: {exc.strerror}")
        elif isinstance(exc, OSError):
            await self._failed(model, "io", f"writing into {self.root}: {exc}")
        else:
            await self._failed(model, "unavailable", str(exc))

    async def _failed(self, model: ModelInfo, kind: str, reason: str, *, nuid: str = "") -> None:
        entry = self._retry.failed(model.model_id, time.monotonic())
        retry_in = max(0.0, entry.not_before - time.monotonic())
        log.warning("distributor %s: %s %s (attempt %d, retry in %.0fs): %s", self.node, kind, model.model_id, entry.failures, retry_in, reason)
        await self._report(model.model_id, kind, reason, attempt=entry.failures, retry_in_s=retry_in, nuid=nuid)

    async def _report(self, model_id: str, kind: str, reason: str, *, attempt: int = 1, retry_in_s: float = 0.0, nuid: str = "") -> None:
        self._counts["failures"] += 1
        event = ModelDistributionFailed(model_id=model_id, node=self.node, kind=kind, reason=reason, attempt=attempt,
                                        retry_in_s=round(retry_in_s, 3), object_nuid=nuid)
        try:
            await self._publisher.publish(event)
        except BusError as exc:  # the failure is logged; the bus being down is the bigger news
            log.warning("distributor %s: could not report the failure: %s", self.node, exc)

    async def _announce(self, model: ModelInfo, seconds: float) -> None:
        path = canonical_path(self.root, model.board_type, model.num_players)
        event = ModelDistributed(model_id=model.model_id, node=self.node, sha256=model.sha256, seconds=round(seconds, 3), path=str(path))
        try:
            await self._publisher.publish(event)
        except BusUnavailable as exc:
            log.warning("distributor %s: MODEL_DISTRIBUTED for %s not published yet: %s", self.node, model.model_id, exc)
            return
        self._announced.add(model.model_id)
        self._retry.succeeded(model.model_id)
        log.info("distributor %s: %s installed as %s in %.2fs", self.node, model.model_id, path.name, seconds)

    async def _retain(self, state: ModelsState) -> None:
        local = await asyncio.to_thread(install.scan, self.root)
        kept = [KeptVersion(config=c, stem=s) for c, stems in local.versions.items() for s in stems]
        doomed = versions_to_delete(kept, promotion_history(state), current_models(state), self._settings.keep_last)
        for version in doomed:
            if local.active.get(version.config) == version.stem:
                continue  # never the file jobs are being served
            await asyncio.to_thread(fileplace.remove, self.root / VERSIONS / version.config / f"{version.stem}{SUFFIX}")
            self._counts["versions_deleted"] += 1
            log.info("distributor %s: deleted old version %s/%s", self.node, version.config, version.stem)

