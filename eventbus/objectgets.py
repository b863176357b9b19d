"""An object's description and its one chunk read by direct gets: two round trips, no consumer.

nats-py's object store reads an object as: the bucket's stream info (to build an `ObjectStore`),
its metadata by the JetStream API, then an ordered consumer over its chunks (the stream looked up
by subject, the consumer created, the chunks pushed): five round trips in a row, and a consumer
the server makes and drops, for a snapshot of a few kB (a `rr timeline --work`'s cluster start
is ~3 kB). Every bucket rr makes allows direct gets (objects.bucket_config); the last message on
an object's metadata subject is its description, and the last on its chunk subject is its
content when it has one chunk. A bucket without direct gets (made elsewhere) answers "no
responders": the caller then reads it the usual way.
"""

from __future__ import annotations

import json

import msgspec
import nats.errors
from nats.js.api import ObjectInfo

from eventbus.connection import Bus

TIMEOUT_S = 10.0
NOT_DIRECT = object()  # the bucket's stream does not answer direct gets (or has no stream): read it another way


def bucket_stream(bucket: str) -> str:
    """The stream that holds object store bucket `bucket`."""
    return f"OBJ_{bucket}"


def chunk_subject(bucket: str, nuid: str) -> str:
    """The subject of one version's chunks, as nats-py names it."""
    return f"$O.{bucket}.C.{nuid}"


async def last_message(bus: Bus, bucket: str, subject: str) -> bytes | None | object:
    """The data of the last message on `subject` in the bucket's stream; None: none; NOT_DIRECT: ask another way.

    Raises nats' TimeoutError, as nats-py's own calls do, for the caller to translate.
    """
    request = msgspec.json.encode({"last_by_subj": subject})
    try:
        reply = await bus.nc.request(f"$JS.API.DIRECT.GET.{bucket_stream(bucket)}", request, timeout=TIMEOUT_S)
    except nats.errors.NoRespondersError:
        return NOT_DIRECT
    status = (reply.headers or {}).get("Status")
    if status == "404":
        return None
    if status is not None:  # a refusal (a request the server finds bad): not an answer about the object
        return NOT_DIRECT
    return reply.data


def object_info(data: bytes) -> ObjectInfo:
    """The description stored on a metadata subject (raises ValueError when it does not parse)."""
    info: ObjectInfo = ObjectInfo.from_response(json.loads(data))
    return info
