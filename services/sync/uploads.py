"""The source side of a planned copy: put the batch in the data bucket, unless the same content is there already."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from config.nodedirs import batch_path
from config.sections.sync import SyncSettings
from eventbus.connection import Bus
from eventbus.errors import BusError
from eventbus.events import ArtifactRef, DataSyncComplete
from eventbus.objects import put_file, stat_object
from eventbus.publisher import Publisher
from projections.data import Batch, Transfer
from servicekit.filehash import sha256_file
from servicekit.retry import RetryTable

log = logging.getLogger(__name__)


class BatchUploads:
    """Uploads for the copies planned from this node; a batch already stored with the same content is not uploaded again."""

    def __init__(self, bus: Bus, publisher: Publisher, node: str, root: Path, settings: SyncSettings) -> None:
        self._bus, self._publisher, self._node, self._root, self._settings = bus, publisher, node, root, settings
        self._retry = RetryTable(settings.poll_initial_s, settings.poll_max_s)
        # Transfer id -> monotonic time its batch was last seen in the store. Looked at again after
        # poll_max_s: a target that found the stored batch corrupt deletes it, and it must come back.
        self._done: dict[str, float] = {}
        self.counts = {"uploads": 0, "uploads_skipped": 0}

    def keep_only(self, open_ids: set[str]) -> None:
        """Forget copies that are no longer open."""
        self._done = {k: v for k, v in self._done.items() if k in open_ids}

    def source_path(self, batch: Batch, origin: ArtifactRef | None) -> Path:
        """The file to upload: the one selfplay wrote here, else this node's received copy."""
        if origin is not None and origin.node == self._node:
            return Path(origin.path)
        return batch_path(self._root, batch, origin.path if origin is not None else "")

    async def ensure(self, transfer: Transfer, batch: Batch, origin: ArtifactRef | None) -> bool:
        """Make sure the batch is in the store for this copy; False when this node ended the copy as failed."""
        now = time.monotonic()
        seen = self._done.get(transfer.transfer_id)
        if (seen is not None and now - seen < self._settings.poll_max_s) or not self._retry.due(transfer.transfer_id, now):
            return True
        try:
            stored = await stat_object(self._bus, self._settings.bucket, batch.batch_id)
            if stored is not None and (not batch.sha256 or stored.sha256 == batch.sha256):
                self.counts["uploads_skipped"] += 1
            else:
                path = self.source_path(batch, origin)
                problem = await asyncio.to_thread(_unusable, path, batch)
                if problem:
                    return await self._give_up(transfer, problem)
                await put_file(self._bus, self._settings.bucket, batch.batch_id, path, description=f"batch from {self._node}")
                self.counts["uploads"] += 1
                log.info("sync %s: uploaded %s for %s", self._node, batch.batch_id, transfer.transfer_id)
        except BusError as exc:
            self._retry.failed(transfer.transfer_id, time.monotonic())
            log.warning("sync %s: upload for %s: %s", self._node, transfer.transfer_id, exc)
            return True
        except OSError as exc:
            return await self._give_up(transfer, f"source {self._node} cannot read the batch: {exc}")
        self._done[transfer.transfer_id] = time.monotonic()
        return True

    async def _give_up(self, transfer: Transfer, error: str) -> bool:
        log.warning("sync %s: %s: %s", self._node, transfer.transfer_id, error)
        event = DataSyncComplete(batch_id=transfer.batch_id, transfer_id=transfer.transfer_id, to_node=transfer.to_node,
                                 ok=False, error=error)
        try:
            await self._publisher.publish(event)
        except BusError:
            return True  # tried again next pass
        return False


def _unusable(path: Path, batch: Batch) -> str:
    """Why the local file cannot be sent as the batch ('' when it can) (blocking)."""
    if not path.is_file():
        return f"source no longer has {path}"
    size, sha256 = sha256_file(path)
    if batch.sha256 and sha256 != batch.sha256:
        return f"source file {path} has sha256 {sha256[:12]}, the batch {batch.sha256[:12]}"
    if batch.size_bytes and size != batch.size_bytes:
        return f"source file {path} has {size} bytes, the batch {batch.size_bytes}"
    return ""
