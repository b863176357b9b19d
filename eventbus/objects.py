"""Files in the JetStream object store (models, game data): buckets, upload, a fast verified download, stat (deletes: objectdelete.py).

nats-py's `ObjectStore.get` reads ~51 MB/s here (its message iterator plus an executor hop
per chunk); `fetch_to_file` subscribes to the object's chunk subject with an ordered push
consumer and a callback, hands the chunks to one writer thread that writes and hashes them
in order, and checks size and SHA-256 against the stored digest and the caller's expectation
(~200-400 MB/s: ops/bench/bench_distribution.py). Uploads use nats-py's `put` with chunks
as large as the server accepts (~265-360 MB/s, NATS-NOTES).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import DiscardPolicy, ObjectInfo, ObjectMetaOptions, StorageType, StreamConfig
from nats.js.object_store import ObjectStore

from eventbus import objectgets
from eventbus.connection import Bus
from eventbus.errors import BusError, BusUnavailable
from eventbus.history import _seq_and_pending
from eventbus.objectwriter import ChunkWriter

CHUNK_BYTES = 1 << 20  # capped by the server's max_payload at upload
API_TIMEOUT_S = 10.0  # one JetStream API call (stat, delete, bucket lookup)
STALL_CHECK_S = 1.0  # a download without a chunk this long checks whether its object was replaced
DIGEST_PREFIX = "SHA-256="
# JetStream's err_codes for a failed expected-last-sequence check: 10071 from a single server,
# 10164 (the same refusal, as a constant error) from a clustered stream's leader
WRONG_LAST_SEQUENCE = (10071, 10164)

T = TypeVar("T")

# What a server going away looks like to an object store call: a timeout, no responders, or, from a
# JetStream publish (an upload's chunk or metadata, a delete marker), nats-py's NoStreamResponseError,
# which is its "no responders" for publishes and no subclass of NoRespondersError. Each is retryable.
SILENT = (
    nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
    nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError, asyncio.TimeoutError,
)


class ObjectMissing(BusError):
    """No (undeleted) object of that name is in the bucket, or the bucket does not exist."""


class ObjectReplaced(BusError):
    """The object got a new version (or was deleted) while it was being read: read it again."""


class ObjectCorrupt(BusError):
    """A stored object's content does not match its digest, its size, or what the caller expected."""

    def __init__(self, message: str, nuid: str) -> None:
        super().__init__(message)
        self.nuid = nuid


class BucketSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An object store bucket as a service declares it."""

    name: str
    description: str = ""
    replicas: int = 1
    storage: Literal["file", "memory"] = "file"
    max_bytes: int = -1  # the bucket refuses new objects past this (discard new)
    max_age_s: float = 0.0  # objects older than this expire; 0 keeps them


class StoredObject(msgspec.Struct, frozen=True, kw_only=True):
    """One object as the bucket describes it; `nuid` names this version of its content."""

    bucket: str
    name: str
    size: int
    sha256: str  # hex, from the stored digest
    nuid: str
    chunks: int = 0
    mtime: str = ""
    description: str = ""


class Fetched(msgspec.Struct, frozen=True, kw_only=True):
    """A verified download: the object read, where it was written, and how long it took."""

    object: StoredObject
    path: str
    seconds: float


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """`awaitable`, cancelled after `seconds` (asyncio.TimeoutError)."""
    # asyncio.timeout rather than wait_for: on Python 3.11 wait_for can swallow a cancellation
    # that arrives as the awaited call completes, and a cancelled agent would then run on.
    async with asyncio.timeout(seconds):
        return await awaitable


def hex_of_digest(digest: str) -> str:
    """'SHA-256=<urlsafe base64>' as lower-case hex ('' when it is not such a digest)."""
    if not digest or not digest.upper().startswith(DIGEST_PREFIX):
        return ""
    try:
        return base64.urlsafe_b64decode(digest[len(DIGEST_PREFIX) :]).hex()
    except (binascii.Error, ValueError):
        return ""


def _stored(bucket: str, info: object) -> StoredObject:
    return StoredObject(
        bucket=bucket, name=str(getattr(info, "name", "")), size=int(getattr(info, "size", 0) or 0),
        sha256=hex_of_digest(str(getattr(info, "digest", "") or "")), nuid=str(getattr(info, "nuid", "") or ""),
        chunks=int(getattr(info, "chunks", 0) or 0), mtime=str(getattr(info, "mtime", "") or ""),
        description=str(getattr(info, "description", "") or ""),
    )


async def _store(bus: Bus, bucket: str) -> ObjectStore:
    try:
        return await within(API_TIMEOUT_S, bus.js.object_store(bucket))
    except nats.js.errors.BucketNotFoundError:
        raise ObjectMissing(f"object store bucket {bucket} does not exist") from None
    except SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer looking up bucket {bucket}: {exc or type(exc).__name__}") from None


def bucket_config(spec: BucketSpec) -> StreamConfig:
    """The bucket's stream: nats-py's object store layout, with rollups off and purges denied.

    Every node may write to the buckets, and a message with `Nats-Rollup: all` on any of their
    subjects would empty the whole bucket, as a purge would; uploads and deletions here need
    neither (readers take the last metadata message per object).
    """
    return StreamConfig(
        name=f"OBJ_{spec.name}", description=spec.description or None,
        subjects=[f"$O.{spec.name}.C.>", f"$O.{spec.name}.M.>"],
        max_age=spec.max_age_s or None, max_bytes=spec.max_bytes or -1, max_consumers=0,
        storage=StorageType.FILE if spec.storage == "file" else StorageType.MEMORY, num_replicas=spec.replicas,
        discard=DiscardPolicy.NEW, allow_rollup_hdrs=False, deny_purge=True, allow_direct=True,
    )


async def ensure_bucket(bus: Bus, spec: BucketSpec) -> None:
    """Create the bucket if it does not exist yet (an existing one is left as it is)."""
    try:
        await within(API_TIMEOUT_S, bus.js.object_store(spec.name))
        return
    except nats.js.errors.BucketNotFoundError:
        pass
    except SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer looking up bucket {spec.name}: {exc or type(exc).__name__}") from None
    await create_bucket_stream(bus, spec.name, bucket_config(spec))


async def create_bucket_stream(bus: Bus, bucket: str, config: StreamConfig) -> None:
    """Create the stream of `bucket` (an object store or KV bucket) unless another node just did (raises BusError)."""
    try:
        await within(API_TIMEOUT_S, bus.js.add_stream(config))
    except nats.js.errors.BadRequestError:
        pass  # created by another node between our lookup and our create
    except SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer creating bucket {bucket}: {exc or type(exc).__name__}") from None
    except nats.js.errors.APIError as exc:
        raise BusError(f"cannot create bucket {bucket}: {exc.description} (err_code {exc.err_code})") from None


async def harden_bucket(bus: Bus, bucket: str) -> str:
    """Turn off rollups and deny purges on a bucket made before bucket_config did; returns hardened|unchanged|missing."""
    try:
        info = await within(API_TIMEOUT_S, bus.js.stream_info(f"OBJ_{bucket}"))
        if not info.config.allow_rollup_hdrs and info.config.deny_purge:
            return "unchanged"
        hardened = dataclasses.replace(info.config, allow_rollup_hdrs=False, deny_purge=True)
        await within(API_TIMEOUT_S, bus.js.update_stream(hardened))
    except nats.js.errors.NotFoundError:
        return "missing"
    except SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer hardening bucket {bucket}: {exc or type(exc).__name__}") from None
    except nats.js.errors.APIError as exc:
        raise BusError(f"cannot harden bucket {bucket}: {exc.description} (err_code {exc.err_code})") from None
    return "hardened"


async def stat_object(bus: Bus, bucket: str, name: str) -> StoredObject | None:
    """The object's description, None when the bucket has no such (undeleted) object."""
    try:
        store = await _store(bus, bucket)
    except ObjectMissing:
        return None
    try:
        info = await within(API_TIMEOUT_S, store.get_info(name))
    except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError):
        return None
    except nats.js.errors.BadObjectMetaError:
        raise ObjectCorrupt(f"object {bucket}/{name} has unreadable metadata", "") from None
    except SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer stat of {bucket}/{name}: {exc or type(exc).__name__}") from None
    return _stored(bucket, info)


async def list_objects(bus: Bus, bucket: str) -> list[StoredObject]:
    """Every undeleted object of the bucket, by name ([] for a missing or empty bucket)."""
    try:
        store = await _store(bus, bucket)
        infos = await within(bus.api_timeout_s, store.list(ignore_deletes=True))
    except (ObjectMissing, nats.js.errors.NotFoundError):
        return []
    except SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer listing {bucket}: {exc or type(exc).__name__}") from None
    return sorted((_stored(bucket, i) for i in infos), key=lambda o: o.name)


async def put_file(
    bus: Bus, bucket: str, name: str, path: Path, *, description: str = "", timeout_s: float = 600.0
) -> StoredObject:
    """Upload a file as the object `name` (a new version replaces the old one); raises BusUnavailable, OSError.

    Unlike nats-py's `put`, it never purges: nodes may not (servicekit/auth/permissions.py), so
    the chunks of the version it replaces, or of an upload that failed half-way, stay in the
    bucket until the leader's store clean-up deletes them (eventbus/objectdelete.py).
    """
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        return await put_stream(bus, bucket, name, handle, what=str(path), description=description, timeout_s=timeout_s)
    finally:
        await asyncio.to_thread(handle.close)


async def put_stream(
    bus: Bus, bucket: str, name: str, handle: BinaryIO, *, what: str, description: str = "", timeout_s: float = 600.0
) -> StoredObject:
    """Upload what `handle` reads (`what` names it in errors) as the object `name`, as put_file does."""
    await _store(bus, bucket)  # ObjectMissing when there is no such bucket
    chunk = min(CHUNK_BYTES, bus.nc.max_payload or CHUNK_BYTES)
    nuid = os.urandom(12).hex()
    try:
        async with asyncio.timeout(timeout_s):
            size, chunks, digest = await _publish_chunks(bus, f"$O.{bucket}.C.{nuid}", handle, chunk)
            info = ObjectInfo(
                name=name, bucket=bucket, nuid=nuid, size=size, chunks=chunks, mtime=utcnow_iso(),
                digest=DIGEST_PREFIX + base64.urlsafe_b64encode(digest).decode(), description=description or None,
                options=ObjectMetaOptions(max_chunk_size=chunk),
            )
            # No rollup: buckets refuse them (bucket_config); readers take the last metadata per object.
            await bus.js.publish(meta_subject(bucket, name), json.dumps(info.as_dict()).encode())
    except SILENT as exc:
        raise BusUnavailable(f"upload of {what} to {bucket}/{name} did not finish: {exc or type(exc).__name__}") from None
    except nats.js.errors.APIError as exc:
        raise BusError(f"upload of {what} to {bucket}/{name} refused: {exc.description} (err_code {exc.err_code})") from None
    return _stored(bucket, info)


def utcnow_iso() -> str:
    """The object store's mtime format."""
    return dt.datetime.now(dt.UTC).isoformat()


async def _publish_chunks(bus: Bus, subject: str, handle: BinaryIO, chunk: int) -> tuple[int, int, bytes]:
    digest = hashlib.sha256()

    def read() -> bytes:
        data = handle.read(chunk)
        digest.update(data)  # in the reading thread: hashing is ~0.7 ms per MiB
        return data

    size = chunks = 0
    while data := await asyncio.to_thread(read):
        await bus.js.publish(subject, data)
        size, chunks = size + len(data), chunks + 1
    return size, chunks, digest.digest()


def meta_subject(bucket: str, name: str) -> str:
    """The subject of an object's metadata messages."""
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


async def fetch_to_file(
    bus: Bus,
    bucket: str,
    name: str,
    dest: Path,
    *,
    expect_sha256: str = "",
    expect_size: int | None = None,
    idle_timeout_s: float = 30.0,
) -> Fetched:
    """Download an object into `dest` (created or truncated, fsynced) and verify it.

    Raises ObjectMissing, ObjectCorrupt (size or SHA-256 differ from the stored digest or
    from what the caller expects; `dest` then holds garbage for the caller to remove),
    ObjectReplaced (a new version purged the chunks being read), BusUnavailable (nothing
    arrived for `idle_timeout_s`) and OSError from writing (ENOSPC).
    """
    started = time.perf_counter()
    stored = await stat_object(bus, bucket, name)
    if stored is None:
        raise ObjectMissing(f"no object {bucket}/{name}")
    _check_expected(stored, stored.size, stored.sha256, expect_sha256, expect_size, "is described as")
    writer = ChunkWriter(dest, limit=max(stored.size, expect_size or 0))
    try:
        if stored.size:
            await read_chunks(bus, stored, writer, idle_timeout_s)
        size, sha256 = await writer.finish()
    finally:
        await writer.close()
    if size != stored.size or sha256 != stored.sha256:
        raise ObjectCorrupt(
            f"object {bucket}/{name} read {size} bytes with sha256 {sha256[:12] or '-'}, its digest says "
            f"{stored.size} bytes with sha256 {stored.sha256[:12]}", stored.nuid,
        )
    _check_expected(stored, size, sha256, expect_sha256, expect_size, "has")
    return Fetched(object=stored, path=str(dest), seconds=time.perf_counter() - started)


def _check_expected(stored: StoredObject, size: int, sha256: str, expect_sha256: str, expect_size: int | None, verb: str) -> None:
    if expect_size is not None and size != expect_size:
        raise ObjectCorrupt(f"object {stored.bucket}/{stored.name} {verb} {size} bytes, expected {expect_size}", stored.nuid)
    if expect_sha256 and sha256 != expect_sha256.lower():
        raise ObjectCorrupt(
            f"object {stored.bucket}/{stored.name} {verb} sha256 {sha256[:12]}, expected {expect_sha256[:12]}", stored.nuid
        )


async def fetch_bytes(bus: Bus, bucket: str, name: str, *, idle_timeout_s: float = 30.0) -> bytes | None:
    """An object's content in memory, verified against its digest; None when there is no such object.

    For objects that fit in memory (snapshots): one ordered push consumer over the chunks, about
    4x nats-py's `ObjectStore.get(writeinto=)`, whose flow control caps it near 51 MB/s; an object
    of one chunk by two direct gets instead (eventbus/objectgets.py). Raises ObjectCorrupt,
    ObjectReplaced and BusUnavailable as `fetch_to_file` does.
    """
    stored = await stat_direct(bus, bucket, name)
    if stored is None:
        return None
    sink = _MemorySink(stored.size)
    await fetch_chunks(bus, stored, sink, idle_timeout_s)
    data, read = b"".join(sink.chunks), sink.size  # more than its size is counted, not kept
    sha256 = (hashlib.sha256(data).hexdigest() if len(data) <= INLINE_DIGEST_BYTES
              else await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest()))
    check_digest(stored, read, sha256)
    return data


def check_digest(stored: StoredObject, read: int, sha256: str) -> None:
    """Raises ObjectCorrupt unless `read` bytes hashing to `sha256` are what `stored`'s digest says."""
    if read != stored.size or sha256 != stored.sha256:
        raise ObjectCorrupt(f"object {stored.bucket}/{stored.name} read {read} bytes with sha256 {sha256[:12]}, its digest "
                            f"says {stored.size} bytes with sha256 {stored.sha256[:12]}", stored.nuid)


# Hashing this much takes ~0.1 ms: less than a thread's hop, so it is done on the loop.
INLINE_DIGEST_BYTES = 256 * 1024


async def stat_direct(bus: Bus, bucket: str, name: str) -> StoredObject | None:
    """`stat_object` by one direct get of the object's description (no stream info first); the usual way without direct gets."""
    try:
        data = await objectgets.last_message(bus, bucket, meta_subject(bucket, name))
    except SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer stat of {bucket}/{name}: {exc or type(exc).__name__}") from None
    if data is objectgets.NOT_DIRECT:
        return await stat_object(bus, bucket, name)
    if data is None:
        return None
    try:
        info = objectgets.object_info(data)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError):
        raise ObjectCorrupt(f"object {bucket}/{name} has unreadable metadata", "") from None
    return None if info.deleted else _stored(bucket, info)


async def one_chunk(bus: Bus, stored: StoredObject) -> bytes | None:
    """The content of an object of one chunk by a direct get; None: read it by a consumer (no direct gets)."""
    try:
        data = await objectgets.last_message(bus, stored.bucket, objectgets.chunk_subject(stored.bucket, stored.nuid))
    except SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer reading {stored.bucket}/{stored.name}: {exc or type(exc).__name__}") from None
    if data is None:  # a new version (or a delete) purged this one's chunk since its description was read
        raise ObjectReplaced(f"object {stored.bucket}/{stored.name} was replaced while being read")
    return None if data is objectgets.NOT_DIRECT else data  # type: ignore[return-value]


async def fetch_chunks(bus: Bus, stored: StoredObject, sink: ChunkSink, idle_timeout_s: float) -> None:
    """Every chunk of `stored` to `sink`: one chunk by a direct get, several (or no direct gets) by a consumer."""
    data = await one_chunk(bus, stored) if stored.chunks == 1 else None
    if data is not None:
        await sink.write(data)
    elif stored.size:
        await read_chunks(bus, stored, sink, idle_timeout_s)


class _MemorySink:
    """Chunks kept in order in memory, up to the object's size (more is counted, not kept)."""

    def __init__(self, limit: int) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self._limit = limit

    async def write(self, data: bytes) -> BaseException | None:
        self.size += len(data)
        if self.size <= self._limit:
            self.chunks.append(data)
        return None


class ChunkSink(Protocol):
    """Where `read_chunks` hands each chunk, in order; a failure it returns ends the read."""

    async def write(self, data: bytes) -> BaseException | None: ...


async def read_chunks(bus: Bus, stored: StoredObject, writer: ChunkSink, idle_timeout_s: float) -> None:
    """Every chunk of `stored` to `writer`, by one ordered push consumer; raises as `fetch_to_file` does."""
    # Done when the consumer says nothing is pending; a tampered object with extra chunks
    # is read to its end and then fails the size check.
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    received = 0

    async def on_chunk(msg: Msg) -> None:
        nonlocal received
        received += 1
        _seq, pending = _seq_and_pending(msg.reply)
        failure = await writer.write(msg.data)
        if failure is not None and not done.done():
            done.set_exception(failure)
        elif pending == 0 and not done.done():
            done.set_result(None)

    subject = f"$O.{stored.bucket}.C.{stored.nuid}"
    try:
        sub = await bus.js.subscribe(subject, ordered_consumer=True, cb=on_chunk)
    except SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer reading {stored.bucket}/{stored.name}: {exc or type(exc).__name__}") from None

    async def replaced() -> bool:
        current = await stat_object(bus, stored.bucket, stored.name)
        return current is None or current.nuid != stored.nuid

    try:
        await _wait_moving(done, lambda: received, idle_timeout_s, replaced, f"{stored.bucket}/{stored.name}")
    finally:
        with contextlib.suppress(*SILENT, nats.errors.BadSubscriptionError):
            await sub.unsubscribe()
        if done.done() and not done.cancelled():
            done.exception()  # seen here or raised above: never "exception was never retrieved"


async def _wait_moving(
    done: asyncio.Future[None], progress: Callable[[], int], idle_timeout_s: float,
    replaced: Callable[[], Awaitable[bool]], what: str,
) -> None:
    # A pause in the chunks is first checked against the object itself: a new version purges
    # the old chunks, which looks like a stall but is a reason to start over at once.
    check_every = min(STALL_CHECK_S, idle_timeout_s)
    last, still_since = -1, time.monotonic()
    while not done.done():
        if progress() != last:
            last, still_since = progress(), time.monotonic()
        elif await replaced():
            raise ObjectReplaced(f"object {what} was replaced while being read")
        elif time.monotonic() - still_since >= idle_timeout_s:
            raise BusUnavailable(f"download of {what} stalled: no chunk for {idle_timeout_s:g}s")
        await asyncio.wait([done], timeout=check_every)
    done.result()
