"""Parking poison messages: the original bytes, untouched, plus why and where they came from."""

from __future__ import annotations

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from eventbus.connection import Bus
from eventbus.errors import BusUnavailable
from eventbus.events import utcnow
from eventbus.streams import DEADLETTER_STREAM
from eventbus.subjects import deadletter_subject


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
    data: bytes


async def park(
    bus: Bus, msg: Msg, *, stream: str, consumer: str, stream_seq: int, deliveries: int, reason: str
) -> None:
    """Copy a message to the dead-letter stream with its reason; raises BusUnavailable if not stored."""
    headers = {
        # Parking the same message twice (a crash between park and ack) keeps one copy.
        "Nats-Msg-Id": f"dlq:{stream}:{consumer}:{stream_seq}",
        "Rr-Reason": reason.replace("\r", " ").replace("\n", " ")[:1000],
        "Rr-Stream": stream,
        "Rr-Consumer": consumer,
        "Rr-Stream-Seq": str(stream_seq),
        "Rr-Subject": msg.subject,
        "Rr-Deliveries": str(deliveries),
        "Rr-Parked-At": utcnow().isoformat(),
    }
    try:
        await bus.js.publish(deadletter_subject(stream, consumer), msg.data, timeout=5, headers=headers)
    except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError, nats.js.errors.APIError) as exc:
        raise BusUnavailable(f"dead-letter stream did not store the message: {exc}") from None


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
            )
        )
        seq += 1
    return parked
