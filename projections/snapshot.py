"""Versioned snapshots of a projection state: bytes out, and back only when the versions still match.

A snapshot is msgpack: a header (snapshot schema version, projection name and version, last_seq)
then the state. Loading one written by another schema or projection version gives None, and
the caller rebuilds from sequence 1: a stale snapshot is never half-read into a new shape.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Generic, TypeVar

import msgspec

from projections import wire
from projections.base import Projection
from projections.pmap import enc_hook

SCHEMA_VERSION = 1

S = TypeVar("S", bound=Any)


class SnapshotHeader(msgspec.Struct, frozen=True, kw_only=True):
    """What a snapshot is of, and how far into the stream."""

    schema: int
    projection: str
    version: int
    last_seq: int
    taken_at: dt.datetime | None = None


class _Envelope(msgspec.Struct, frozen=True):
    header: SnapshotHeader
    state: msgspec.Raw  # decoded only once the header says the versions match


class Loaded(msgspec.Struct, Generic[S], frozen=True):
    """A snapshot that matched: its header and the state it holds."""

    header: SnapshotHeader
    state: S


_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)


def encode_snapshot(projection: Projection[S], state: S, taken_at: dt.datetime | None = None) -> bytes:
    """The snapshot of `state` as bytes."""
    header = SnapshotHeader(
        schema=SCHEMA_VERSION, projection=projection.name, version=projection.version,
        last_seq=state.last_seq, taken_at=taken_at,
    )
    return _encoder.encode(_Envelope(header, msgspec.Raw(_encoder.encode(state))))


def read_header(data: bytes) -> SnapshotHeader | None:
    """The header of a snapshot, None when the bytes are not one."""
    try:
        return _envelope_decoder.decode(data).header
    except msgspec.DecodeError:
        return None


def decode_snapshot(projection: Projection[S], data: bytes) -> Loaded[S] | None:
    """The state in a snapshot of this projection and version; None for any other or unreadable one."""
    try:
        envelope = _envelope_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    header = envelope.header
    if (header.schema, header.projection, header.version) != (SCHEMA_VERSION, projection.name, projection.version):
        return None
    state_type = type(projection.initial())
    try:
        state = wire.decode(envelope.state, state_type)  # one typed pass (projections/wire.py)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if state.last_seq != header.last_seq:
        return None
    return Loaded(header, state)
