"""Parking poison messages: a reference to the original (stream and sequence), its first bytes, why, and where from.

The original stays in its stream (the log deletes nothing), so the parked copy needs only
enough to read it: its body is cut to DLQ_BODY_MAX bytes, and the headers are bounded too, so
a parked entry always fits the server's max payload, never larger than the message itself
plus its bounded headers (a ~1 MiB message once could not be parked at all).
"""

from __future__ import annotations

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from eventbus.connection import Bus
from eventbus.errors import BusUnavailable
from eventbus.events import utcnow
from eventbus.streams import DEADLETTER_STREAM, DLQ_BODY_MAX
from eventbus.subjects import deadletter_subject

HEADER_VALUE_MAX = 1000  # characters of one header value (reason, subject)


class ParkedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message in the dead-letter stream, as `rr dlq` shows it."""

    dlq_seq: int
    stream: str
    consumer: str
    stream_seq: int
    subject: str
    deliveries: int
    reason: str
    parked_at: str
    data: bytes  # the original's first DLQ_BODY_MAX bytes
    size: int = 0  # the original body's size in bytes


async def park(
    bus: Bus, msg: Msg, *, stream: str, consumer: str, stream_seq: int, deliveries: int, reason: str
) -> None:
    """Copy a message to the dead-letter stream with its reason; raises BusUnavailable if not stored."""
    headers = {
        # Parking the same message twice (a crash between park and ack) keeps one copy.
        "Nats-Msg-Id": f"dlq:{stream}:{consumer}:{stream_seq}",
        "Rr-Reason": _header(reason),
        "Rr-Stream": stream,
        "Rr-Consumer": consumer,
        "Rr-Stream-Seq": str(stream_seq),
        "Rr-Subject": _header(msg.subject),
        "Rr-Deliveries": str(deliveries),
        "Rr-Parked-At": utcnow().isoformat(),
        "Rr-Size": str(len(msg.data)),
    }
    try:
        await bus.js.publish(deadletter_subject(stream, consumer), msg.data[:DLQ_BODY_MAX], timeout=5, headers=headers)
    except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError, nats.js.errors.APIError) as exc:
        raise BusUnavailable(f"dead-letter stream did not store the message: {exc}") from None


def _header(value: str) -> str:
    """A header value that cannot break the header block or grow past HEADER_VALUE_MAX."""
    return value.replace("\r", " ").replace("\n", " ")[:HEADER_VALUE_MAX]


async def list_parked(bus: Bus, *, limit: int = 100) -> list[ParkedMessage]:
    """The oldest parked messages, up to `limit`, read directly without a consumer."""
    try:
        info = await bus.js.stream_info(DEADLETTER_STREAM)
    except nats.js.errors.NotFoundError:
        return []
    parked: list[ParkedMessage] = []
    seq = max(1, info.state.first_seq)  # an empty stream reports 0, which get_msg rejects
    while seq <= info.state.last_seq and len(parked) < limit:
        try:
            raw = await bus.js.get_msg(DEADLETTER_STREAM, seq)
        except nats.js.errors.NotFoundError:
            seq += 1
            continue
        h = raw.headers or {}
        parked.append(
            ParkedMessage(
                dlq_seq=seq,
                stream=h.get("Rr-Stream", ""),
                consumer=h.get("Rr-Consumer", ""),
                stream_seq=int(h.get("Rr-Stream-Seq", "0")),
                subject=h.get("Rr-Subject", ""),
                deliveries=int(h.get("Rr-Deliveries", "0")),
                reason=h.get("Rr-Reason", ""),
                parked_at=h.get("Rr-Parked-At", ""),
                data=raw.data or b"",
                size=int(h.get("Rr-Size", str(len(raw.data or b"")))),
            )
        )
        seq += 1
    return parked
