"""What a lease key holds, pure: the value a holder writes and the record one stored message stands for.

Kept apart from eventbus/leases.py (the bucket's I/O) so that the folds can read the server's
copies of lease writes (eventbus/leasecopy.py) without importing the client.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

# The bucket's own Nats-Msg-Id window: every write of one term carries the same id, so that the
# log (which sources the bucket, eventbus/leasecopy.py) keeps the acquisition's copy and drops
# its renewals'; the bucket itself must not drop them, so its window is the server's minimum,
# shorter than any renewal interval (config/sections/leadership.py checks).
DEDUPE_WINDOW_S = 0.1

LeaseState = Literal["held", "absent", "deleted", "expired", "purged", "unreadable"]


class LeaseValue(msgspec.Struct, frozen=True, kw_only=True):
    """What a lease key holds: who leads, since when, and the term's epoch."""

    node: str
    incarnation: str  # random per process: a restarted node with the same id is another holder
    epoch: int = 0  # revision of the write that acquired the lease; 0 on that write itself
    ttl_s: int
    acquired_at: dt.datetime
    loops: dict[str, str] = {}  # the leader's loops: name -> "running", or why not (set by renewals)


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A role's lease key as last seen: its revision and holder, or why it is free."""

    role: str
    revision: int  # stream sequence of the key's last message; 0 when the key has none
    state: LeaseState
    holder: LeaseValue | None = None  # set only when state is "held"
    written_at: dt.datetime | None = None

    @property
    def free(self) -> bool:
        """Whether anyone may acquire the lease now."""
        return self.holder is None

    @property
    def epoch(self) -> int | None:
        """The holder's fencing epoch (the revision that acquired it); None when free."""
        if self.holder is None:
            return None
        return self.holder.epoch or self.revision


_value_encoder = msgspec.json.Encoder()
_value_decoder = msgspec.json.Decoder(LeaseValue)


def record_from(
    role: str, revision: int, headers: dict[str, str] | None, data: bytes, written_at: dt.datetime | None
) -> LeaseRecord:
    """The lease record one stored message stands for."""
    headers = headers or {}
    operation = headers.get("KV-Operation")
    marker = headers.get("Nats-Marker-Reason")
    if operation == "DEL" or marker == "Remove":
        return LeaseRecord(role=role, revision=revision, state="deleted", written_at=written_at)
    if operation == "PURGE" or marker == "Purge":
        return LeaseRecord(role=role, revision=revision, state="purged", written_at=written_at)
    if marker is not None:  # MaxAge: the holder's TTL ran out
        return LeaseRecord(role=role, revision=revision, state="expired", written_at=written_at)
    try:
        holder = _value_decoder.decode(data)
    except msgspec.DecodeError:
        # Not ours to honour; the compare-and-set still guards whoever takes it.
        return LeaseRecord(role=role, revision=revision, state="unreadable", written_at=written_at)
    return LeaseRecord(role=role, revision=revision, state="held", holder=holder, written_at=written_at)


def parse_headers(raw: bytes) -> dict[str, str]:
    """Headers of a stored message in NATS wire form ("NATS/1.0\\r\\nKey: value\\r\\n...")."""
    headers: dict[str, str] = {}
    for line in raw.decode(errors="replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip()] = value.strip()
    return headers


def encode_value(value: LeaseValue) -> bytes:
    """The JSON a lease write carries."""
    return _value_encoder.encode(value)
