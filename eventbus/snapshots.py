"""Projection snapshots kept in JetStream, one object per projection name, in the `rr_snapshots` bucket.

An object store rather than a KV bucket: a KV value is one message, bounded by the server's
max payload (1 MiB by default), and the snapshot of a long log's work items is larger; the
object store chunks it. A snapshot is only a cache of a fold: losing it costs a rebuild.
"""

from __future__ import annotations

import asyncio
import io

import nats.errors
import nats.js.errors
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.object_store import ObjectStore

from eventbus.connection import Bus
from eventbus.errors import BusError, BusUnavailable

SNAPSHOT_BUCKET = "rr_snapshots"
TIMEOUT_S = 30.0  # a snapshot is a few MiB at most; far more than that means JetStream is not answering

_SILENT = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError, asyncio.TimeoutError)


async def _bucket(bus: Bus, bucket: str, *, create: bool, replicas: int) -> ObjectStore | None:
    try:
        return await asyncio.wait_for(bus.js.object_store(bucket), TIMEOUT_S)
    except nats.js.errors.BucketNotFoundError:
        if not create:
            return None
    config = ObjectStoreConfig(
        bucket=bucket, description="rr projection snapshots (a cache: deleting it costs a rebuild)",
        storage=StorageType.FILE, replicas=replicas,
    )
    return await asyncio.wait_for(bus.js.create_object_store(bucket, config=config), TIMEOUT_S)


async def save_snapshot(bus: Bus, name: str, data: bytes, *, bucket: str = SNAPSHOT_BUCKET, replicas: int = 1) -> None:
    """Store `data` as the snapshot `name`, replacing the previous one; creates the bucket if needed."""
    try:
        store = await _bucket(bus, bucket, create=True, replicas=replicas)
        assert store is not None
        await asyncio.wait_for(store.put(name, data), TIMEOUT_S)
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer saving snapshot {name}: {exc or type(exc).__name__}") from None
    except nats.js.errors.APIError as exc:
        raise BusError(f"snapshot {name} not saved: {exc.description} (err_code {exc.err_code})") from None


async def load_snapshot(bus: Bus, name: str, *, bucket: str = SNAPSHOT_BUCKET) -> bytes | None:
    """The stored snapshot `name`, or None when there is none."""
    try:
        store = await _bucket(bus, bucket, create=False, replicas=1)
        if store is None:
            return None
        buffer = io.BytesIO()
        await asyncio.wait_for(store.get(name, writeinto=buffer), TIMEOUT_S)
    except nats.js.errors.ObjectNotFoundError:
        return None
    except nats.js.errors.NotFoundError:
        return None
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer loading snapshot {name}: {exc or type(exc).__name__}") from None
    return buffer.getvalue()


async def delete_snapshot(bus: Bus, name: str, *, bucket: str = SNAPSHOT_BUCKET) -> bool:
    """Remove the snapshot `name`; False when there was none."""
    try:
        store = await _bucket(bus, bucket, create=False, replicas=1)
        if store is None:
            return False
        await asyncio.wait_for(store.delete(name), TIMEOUT_S)
    except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError):
        return False
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer deleting snapshot {name}: {exc or type(exc).__name__}") from None
    return True
