"""The server's copies of lease writes in the log, pure: where they land and the event each one stands for.

RR_EVENTS sources the lease bucket's stream (eventbus/streams.py): the server copies every
write of `$KV.<bucket>.<role>` to `rr.evt.lease.<role>.LEASE_WRITTEN.nats`, keeping the
write's headers and body and adding `Nats-Stream-Source: <stream> <revision> <filter> <dest>
<origin subject> <id>`. No user may publish on `rr.evt.lease.>` (servicekit/auth/permissions.py),
so such a record is the server's word on what the bucket held: the fences believe an election
only after the copy of the write that acquired its epoch (projections/fencing.py).

A copy is decoded from its subject, headers and body, never from a body claiming to be one:
the revision comes only from the source header, whose stream and origin subject must be the
lease bucket's key of the subject's role. Anything else is InvalidEvent (parked, never applied).
"""

from __future__ import annotations

import msgspec

from eventbus.errors import InvalidEvent
from eventbus.events import BIG, LeaseWritten, decode, encode
from eventbus.leaserecord import record_from
from eventbus.subjects import EVENTS_ROOT, token

COPY_TYPE = LeaseWritten.type_name()
COPY_SOURCE = "nats"  # the subjects' source token: the server wrote it, no node did
COPIES = f"{EVENTS_ROOT}.{LeaseWritten.aggregate}.>"  # every copy, of every role
SOURCE_HEADER = "Nats-Stream-Source"


def copy_subject(role: str) -> str:
    """The subject the copies of one role's lease writes land on."""
    return f"{EVENTS_ROOT}.{LeaseWritten.aggregate}.{token(role)}.{COPY_TYPE}.{COPY_SOURCE}"


def transform(bucket: str) -> tuple[str, str]:
    """(source, destination) of the subject transform that files a bucket's writes under the copy subjects."""
    return f"$KV.{bucket}.*", f"{EVENTS_ROOT}.{LeaseWritten.aggregate}.{{{{wildcard(1)}}}}.{COPY_TYPE}.{COPY_SOURCE}"


def is_copy(subject: str) -> bool:
    """Whether a stored record's subject is a lease copy's (rr.evt.lease.<role>.LEASE_WRITTEN.<source>)."""
    parts = subject.split(".")
    return len(parts) == 6 and parts[2] == LeaseWritten.aggregate and parts[4] == COPY_TYPE


class Origin(msgspec.Struct, frozen=True, kw_only=True):
    """Where a sourced copy came from: the origin stream, the write's revision there, and its subject."""

    stream: str
    revision: int
    subject: str


def origin_of(headers: dict[str, str] | None) -> Origin | None:
    """The origin a copy's `Nats-Stream-Source` header names; None when it has none or it is malformed."""
    value = (headers or {}).get(SOURCE_HEADER)
    tokens = value.split(" ") if value else []
    if len(tokens) < 5 or not tokens[1].isdigit() or not tokens[1].isascii():
        return None
    return Origin(stream=tokens[0], revision=int(tokens[1]), subject=tokens[4])


def decode_copy(subject: str, headers: dict[str, str] | None, data: bytes) -> LeaseWritten:
    """The LEASE_WRITTEN one stored copy stands for; InvalidEvent when it is not the server's copy of a lease write."""
    parts = subject.split(".")
    if not is_copy(subject) or parts[5] != COPY_SOURCE:
        raise InvalidEvent(f"subject {subject!r} is not a lease copy's ({copy_subject('<role>')})")
    role = parts[3]
    origin = origin_of(headers)
    if origin is None:
        raise InvalidEvent(f"{COPY_TYPE} on {subject} has no {SOURCE_HEADER} header: only the server's copy "
                           "of a lease write is one, and no client may publish there")
    bucket = origin.stream.removeprefix("KV_")
    if origin.stream == bucket or origin.subject != f"$KV.{bucket}.{role}" or not 0 < origin.revision <= BIG:
        raise InvalidEvent(f"{COPY_TYPE} on {subject} comes from {origin.stream} {origin.subject} revision "
                           f"{origin.revision}, not from the {role} key of a lease bucket")
    record = record_from(role, origin.revision, headers, data, None)
    holder = record.holder
    event = LeaseWritten(
        id=f"lease:{origin.stream}:{origin.revision}", source=COPY_SOURCE, role=role, revision=origin.revision,
        node=holder.node if holder else None, incarnation=holder.incarnation if holder else None,
        acquiring=holder is not None and holder.epoch == 0, state=record.state,
    )
    return decode(encode(event))  # type: ignore[return-value]  # the catalogue's bounds hold for copies too
