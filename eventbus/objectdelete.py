"""Deleting objects from the buckets without purges: a deletion marker, then the chunks one message at a time.

Nodes may not purge or delete messages (servicekit/auth/permissions.py), and the buckets deny
purges (eventbus/objects.py's bucket_config): a node marks a corrupt object deleted, and the
scheduler leader's store clean-up deletes named objects and the chunks no version names.
"""

from __future__ import annotations

import datetime as dt
import json

import nats.js.errors
from nats.js.api import ObjectInfo

from eventbus.connection import Bus
from eventbus.errors import BusError, BusUnavailable
from eventbus.objects import API_TIMEOUT_S, SILENT, WRONG_LAST_SEQUENCE, ObjectCorrupt, list_objects, meta_subject, within


async def delete_object(bus: Bus, bucket: str, name: str, *, only_nuid: str | None = None, chunks: bool = True) -> bool:
    """Delete an object (only its version `only_nuid`, when given); False when there was nothing to delete.

    The deletion marker is written on condition that the metadata read is still the last
    (Nats-Expected-Last-Subject-Sequence), so a version uploaded meanwhile is never deleted
    in its place (nats-py's `delete` reads the metadata again and would delete the new one).
    The chunks are then deleted message by message, never purged (only admin may purge);
    a node, which may not delete messages, passes `chunks=False` and leaves them to the
    leader's store clean-up (`delete_orphan_chunks`).
    """
    stream, subject = f"OBJ_{bucket}", meta_subject(bucket, name)
    try:
        last = await within(API_TIMEOUT_S, bus.js.get_last_msg(stream, subject))
        info = ObjectInfo.from_response(json.loads(last.data or b"{}"))
        if info.deleted or (only_nuid is not None and info.nuid != only_nuid):
            return False
        marker = dict(info.as_dict(), deleted=True, size=0, chunks=0, digest="", mtime="")
        headers = {"Nats-Expected-Last-Subject-Sequence": str(last.seq)}
        await within(API_TIMEOUT_S, bus.js.publish(subject, json.dumps(marker).encode(), headers=headers))
        if chunks:
            await delete_chunks(bus, bucket, str(info.nuid))
    except nats.js.errors.NotFoundError:
        return False
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code in WRONG_LAST_SEQUENCE:
            return False  # a new version (or a deletion) came first
        raise BusError(f"deleting {bucket}/{name} refused: {exc.description}") from None
    except SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer deleting {bucket}/{name}: {exc or type(exc).__name__}") from None
    except (ValueError, TypeError) as exc:
        raise ObjectCorrupt(f"object {bucket}/{name} has unreadable metadata: {exc}", "") from None
    return True


async def delete_chunks(bus: Bus, bucket: str, nuid: str) -> int:
    """Delete the chunks of one object version (`nuid`) message by message; returns how many."""
    # Each chunk by its sequence (next message on the chunk subject, then delete it): a
    # purge would do it in one call, but a purge permission could empty the whole bucket.
    stream, subject, seq, deleted = f"OBJ_{bucket}", f"$O.{bucket}.C.{nuid}", 1, 0
    while True:
        try:
            msg = await within(API_TIMEOUT_S, bus.js.get_msg(stream, seq, subject=subject, next=True))
        except nats.js.errors.NotFoundError:
            return deleted
        assert msg.seq is not None
        await within(API_TIMEOUT_S, bus.js.delete_msg(stream, msg.seq))
        seq, deleted = msg.seq + 1, deleted + 1


async def delete_orphan_chunks(bus: Bus, bucket: str, *, older_than_s: float) -> int:
    """Delete chunks that no stored version names (replaced versions, failed uploads); returns how many.

    Chunks whose newest message is younger than `older_than_s` are kept: an upload in
    progress has chunks and no metadata yet.
    """
    stream, prefix = f"OBJ_{bucket}", f"$O.{bucket}.C."
    try:
        info = await within(API_TIMEOUT_S, bus.js.stream_info(stream, subjects_filter=f"{prefix}>"))
        live = {o.nuid for o in await list_objects(bus, bucket)}
        deleted = 0
        for subject in info.state.subjects or {}:
            nuid = subject[len(prefix):]
            if nuid in live:
                continue
            newest = await within(API_TIMEOUT_S, bus.js.get_last_msg(stream, subject))
            if newest.time is None or (dt.datetime.now(dt.UTC) - newest.time).total_seconds() < older_than_s:
                continue
            deleted += await delete_chunks(bus, bucket, nuid)
    except nats.js.errors.NotFoundError:
        return 0
    except SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer cleaning {bucket}: {exc or type(exc).__name__}") from None
    return deleted
