"""A node's duties to the models bucket: upload the checkpoints it trained, re-upload one that others found corrupt.

Workers only dial out to NATS, so a model reaches other nodes only if the node holding it
puts it in the store. Every node uploads its own TRAINING_COMPLETE checkpoints (so a
candidate is in the store before anyone promotes it); an object already there with the same
content is not uploaded again. When a node reports a stored version corrupt, exactly one node
(plan.repairer) replaces that version from a verified local file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol

from cluster.distribution.failures import FailuresState, corrupt_reports
from config.nodedirs import version_path
from config.sections.distribution import DistributionSettings
from eventbus.connection import Bus
from eventbus.errors import BusError
from eventbus.objects import put_file, stat_object
from projections.cluster import ClusterState
from projections.models import ModelsState, checkpoint_of
from servicekit.filehash import sha256_file
from servicekit.retry import RetryTable
from services.distributor.plan import is_alive, repairer, uploads_due

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Publishes a MODEL_DISTRIBUTION_FAILED for this node."""

    def __call__(self, model_id: str, kind: str, reason: str, *, attempt: int = 1, retry_in_s: float = 0.0,
                 nuid: str = "") -> Awaitable[None]: ...


class StoreDuties:
    """Uploads and repairs of one node, each at most once per stored version, failures retried with backoff."""

    def __init__(self, bus: Bus, node: str, settings: DistributionSettings, report: Reporter) -> None:
        self._bus = bus
        self._node = node
        self._settings = settings
        self._report = report
        self._retry = RetryTable(settings.retry_initial_s, settings.retry_max_s)
        self._uploaded: set[str] = set()  # model ids known to be in the store (this process)
        self._repaired: dict[str, set[str]] = {}  # model id -> corrupt versions already dealt with
        self._since = dt.datetime.min.replace(tzinfo=dt.UTC)
        self.counts = {"uploads": 0, "uploads_skipped": 0, "repairs": 0}

    def next_due(self, now: float) -> float | None:
        """The earliest monotonic time after `now` a failed upload may be tried again."""
        return self._retry.next_due(now)

    def started(self, now: dt.datetime) -> None:
        """Checkpoints trained since `upload_window_h` before now are this node's to upload."""
        self._since = now - dt.timedelta(hours=self._settings.upload_window_h)

    async def run(self, models: ModelsState, failures: FailuresState, cluster: ClusterState, root: Path) -> None:
        """One pass over the uploads and repairs due now."""
        for model_id, ref in uploads_due(models, self._node, self._since):
            if model_id not in self._uploaded and self._retry.due(model_id, time.monotonic()):
                model = models.models.get(model_id)
                sha256 = ref.sha256 or (model.sha256 if model else "")
                await self._upload(model_id, Path(ref.path), sha256, force=False)
        alive = is_alive(cluster)
        for model_id, nuids in sorted(corrupt_reports(failures).items()):
            model = models.models.get(model_id)
            fresh = nuids - self._repaired.get(model_id, set())
            if model is None or not fresh or repairer(model, alive) != self._node:
                continue
            if not self._retry.due(model_id, time.monotonic()):
                continue
            await self._repair(model_id, fresh, self._source(model_id, models, root), model.sha256)

    def _source(self, model_id: str, models: ModelsState, root: Path) -> Path | None:
        # A verified installed version first, else this node's own checkpoint.
        model = models.models[model_id]
        installed = version_path(root, model.board_type, model.num_players, model_id)
        if installed.is_file():
            return installed
        ref = checkpoint_of(model)
        return Path(ref.path) if ref is not None and ref.node == self._node else None

    async def _repair(self, model_id: str, nuids: set[str], source: Path | None, sha256: str) -> None:
        stored = await stat_object(self._bus, self._settings.bucket, model_id)
        if stored is not None and stored.nuid not in nuids:
            self._repaired.setdefault(model_id, set()).update(nuids)
            return  # someone already replaced the corrupt version
        if source is None:
            self._repaired.setdefault(model_id, set()).update(nuids)
            log.warning("distributor %s: cannot repair %s: no verified local copy", self._node, model_id)
            return
        log.warning("distributor %s: re-uploading %s, reported corrupt (version %s)", self._node, model_id, ",".join(sorted(nuids)))
        if await self._upload(model_id, source, sha256, force=True):
            self._repaired.setdefault(model_id, set()).update(nuids)
            self.counts["repairs"] += 1

    async def _upload(self, model_id: str, path: Path, sha256: str, *, force: bool) -> bool:
        try:
            if not force:
                stored = await stat_object(self._bus, self._settings.bucket, model_id)
                if stored is not None and (not sha256 or stored.sha256 == sha256):
                    self._uploaded.add(model_id)
                    self.counts["uploads_skipped"] += 1
                    return False
            _size, actual = await asyncio.to_thread(sha256_file, path)
            if sha256 and actual != sha256:
                raise OSError(f"{path} has sha256 {actual[:12]}, the log says {sha256[:12]}")
            await put_file(self._bus, self._settings.bucket, model_id, path, description=f"model {model_id} from {self._node}")
        except FileNotFoundError:
            await self._upload_failed(model_id, "checkpoint_missing", f"checkpoint {path} is gone; cannot upload it")
            return False
        except (OSError, BusError) as exc:
            await self._upload_failed(model_id, "io" if isinstance(exc, OSError) else "unavailable", f"upload of {path}: {exc}")
            return False
        self._uploaded.add(model_id)
        self._retry.succeeded(model_id)
        self.counts["uploads"] += 1
        log.info("distributor %s: uploaded %s (%s)", self._node, model_id, path)
        return True

    async def _upload_failed(self, model_id: str, kind: str, reason: str) -> None:
        entry = self._retry.failed(model_id, time.monotonic())
        retry_in = max(0.0, entry.not_before - time.monotonic())
        log.warning("distributor %s: %s", self._node, reason)
        await self._report(model_id, kind, reason, attempt=entry.failures, retry_in_s=retry_in)
