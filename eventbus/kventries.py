"""Entries of a cache kept one key per id in a JetStream KV bucket: one direct get reads one id's entry.

A snapshot object holds a whole map, so reading one id from it costs fetching and decoding every
id's; a key per id is read by the server's subject index, whatever the number of ids. The bucket
keeps the last value of each key only. Like the snapshots, it is a cache of a fold: losing it
costs its writer one full write and its readers a slower path meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable, Sequence

import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.kv import KeyValue

from eventbus.connection import Bus
from eventbus.errors import BucketMissing, BusError, BusUnavailable
from eventbus.objects import create_bucket_stream

_SILENT = (nats.errors.TimeoutError, nats.errors.NoRespondersError, asyncio.TimeoutError)
# Ids made of these are their own key; any other is base64url behind a prefix no plain id starts with.
_PLAIN = re.compile(r"[A-Za-z0-9][-A-Za-z0-9]*")
_ENCODED = "_b64_"
# Requests in flight at once, reads or writes: a server slow to answer (a year's log being read
# beside) gets a bounded queue from us, and each batch waits `Bus.api_timeout_s` at most.
IN_FLIGHT = 256


def entry_key(ident: str) -> str:
    """The KV key of `ident`: itself when it is a plain token, else its UTF-8 in base64url (keys allow few characters)."""
    if _PLAIN.fullmatch(ident):
        return ident
    return _ENCODED + base64.urlsafe_b64encode(ident.encode()).decode().rstrip("=")


def bucket_stream(bucket: str) -> str:
    """The stream that holds the KV bucket `bucket`."""
    return f"KV_{bucket}"


def entries_config(bucket: str, description: str, replicas: int = 1) -> StreamConfig:
    """The bucket's stream: the last value per key, direct gets allowed (any replica answers)."""
    return StreamConfig(
        name=bucket_stream(bucket), description=description, subjects=[f"$KV.{bucket}.>"], max_msgs_per_subject=1,
        allow_direct=True, allow_rollup_hdrs=True, discard=DiscardPolicy.OLD, num_replicas=replicas,
        storage=StorageType.FILE,
    )


async def ensure_entries_bucket(bus: Bus, bucket: str, description: str, replicas: int = 1) -> None:
    """Create the bucket if it does not exist yet (raises BusError)."""
    try:
        await bus.js.stream_info(bucket_stream(bucket))
        return
    except nats.js.errors.NotFoundError:
        pass
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer about bucket {bucket}: {exc or type(exc).__name__}") from None
    await create_bucket_stream(bus, bucket, entries_config(bucket, description, replicas))


async def put_entries(bus: Bus, bucket: str, entries: Sequence[tuple[str, bytes]]) -> None:
    """Write each (key, value) whatever the key holds, `IN_FLIGHT` at once (raises BusError)."""
    for start in range(0, len(entries), IN_FLIGHT):
        await _guarded(bus, bucket, [(key, value, None) for key, value in entries[start:start + IN_FLIGHT]])


ROUNDS = 5  # tries of one key against other writers before giving up on it


async def advance_entries(bus: Bus, bucket: str, entries: Sequence[tuple[str, bytes]],
                          replaces: Callable[[str, bytes, bytes], bool], *, known: dict[str, int] | None = None) -> int:
    """Write each (key, value) where the key has no value yet or `replaces(key, value, stored)`; returns how many were written.

    Each write expects the key's last revision as read (the server refuses it when another
    writer wrote meanwhile; the key is then read again), so several writers never replace a
    newer value with an older one, whatever their order (raises BusError). `known`: the keys are
    most likely new (a first fill), so the first round reads none and expects each at the
    revision `known` holds for it, else absent; every write that lands records its revision
    there, so a try that fails partway tells the next what it stored instead of it being read back.
    """
    written, pending = 0, list(entries)
    for round_ in range(ROUNDS):
        again: list[tuple[str, bytes]] = []
        for start in range(0, len(pending), IN_FLIGHT):
            chunk = pending[start:start + IN_FLIGHT]
            if known is not None and round_ == 0:
                due = [(key, value, known.get(key, 0)) for key, value in chunk]
            else:
                stored = await asyncio.gather(*(get_entry_at(bus, bucket, key) for key, _ in chunk))
                due = [(key, value, seq) for (key, value), (old, seq) in zip(chunk, stored) if old is None or replaces(key, value, old)]
            outcomes = await _guarded(bus, bucket, due, known)
            written += sum(outcomes)
            again += [(key, value) for (key, value, _), ok in zip(due, outcomes) if not ok]
        if not again:
            return written
        pending = again
    raise BusError(f"bucket {bucket}: {len(pending)} keys kept changing under other writers ({pending[0][0]} ...)")


async def _guarded(bus: Bus, bucket: str, due: Sequence[tuple[str, bytes, int | None]],
                   landed: dict[str, int] | None = None) -> list[bool]:
    """Write each (key, value) expecting its last revision `seq` (None: any); False where another writer got there first.

    Each write that lands is recorded in `landed` (its key's new revision) as it lands, so one
    that fails partway still says which keys it stored.
    """
    kv = _key_value(bus, bucket)

    async def one(key: str, value: bytes, seq: int | None) -> bool:
        try:
            revision = await (kv.put(key, value, validate_keys=False) if seq is None
                              else kv.update(key, value, last=seq, validate_keys=False))
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        if landed is not None:
            landed[key] = revision
        return True

    try:
        return list(await asyncio.wait_for(asyncio.gather(*(one(*entry) for entry in due)), bus.api_timeout_s))
    except nats.js.errors.NoStreamResponseError:
        raise BucketMissing(f"bucket {bucket} not written: it has no stream (deleted?); create it again") from None
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer writing bucket {bucket}: {exc or type(exc).__name__}") from None
    except nats.js.errors.APIError as exc:
        raise BusError(f"bucket {bucket} not written: {exc.description} (err_code {exc.err_code})") from None


async def get_entry(bus: Bus, bucket: str, key: str) -> bytes | None:
    """The last value of `key` (a direct get); None when the key or the whole bucket has none (raises BusError)."""
    return (await get_entry_at(bus, bucket, key))[0]


async def get_entry_at(bus: Bus, bucket: str, key: str) -> tuple[bytes | None, int]:
    """The last value of `key` and its revision; (None, 0) when there is none (raises BusError)."""
    try:
        entry = await asyncio.wait_for(_key_value(bus, bucket).get(key, validate_keys=False), bus.api_timeout_s)
    except nats.js.errors.KeyNotFoundError:
        return None, 0
    except nats.errors.NoRespondersError:
        return None, 0  # no stream answers direct gets under that name: the bucket was never created
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer reading {key} of bucket {bucket}: {exc or type(exc).__name__}") from None
    except nats.js.errors.APIError as exc:
        raise BusError(f"{key} of bucket {bucket} not read: {exc.description} (err_code {exc.err_code})") from None
    return entry.value, entry.revision or 0


def _key_value(bus: Bus, bucket: str) -> KeyValue:
    # nats-py's KeyValue, built without `js.key_value()`'s stream info round trip: the bucket's
    # stream allows direct gets (entries_config), which a timeline's two reads rely on.
    return KeyValue(name=bucket, stream=bucket_stream(bucket), pre=f"$KV.{bucket}.", js=bus.js, direct=True)
