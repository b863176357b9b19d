"""Following the log live from a point, with stream sequences, for `rr events tail`.

One ordered push consumer covers both the backlog and what arrives afterwards, so there is
no gap or duplicate between "history" and "live", and every record keeps its sequence
(a core subscription would see live messages without one). Each message goes straight from the
client's parser to the reader (eventbus/orderedread.py `follow`) where the client allows it.
"""

from __future__ import annotations

from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from eventbus import orderedread
from eventbus.connection import Bus
from eventbus.errors import BusUnavailable
from eventbus.history import Record, _seq_and_pending, handed, last_sequence
from eventbus.streams import EVENTS_STREAM
from eventbus.subjects import ALL_EVENTS
from eventbus.tasks import wait_cancelled

_SILENT = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)


async def follow(
    bus: Bus,
    on_record: Callable[[Record], None],
    *,
    subject: str = ALL_EVENTS,
    start_seq: int | None = None,
    stream: str = EVENTS_STREAM,
) -> None:
    """Call `on_record` for each message from `start_seq` (None: new ones only), in order, until cancelled."""
    if orderedread.supported(bus):

        def on_raw(seq: int, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
            handed(on_record, Record(seq, subject, data, headers))

        await orderedread.follow(bus, on_raw, stream=stream, subjects=[subject], start_seq=start_seq)
    else:
        await _follow_msgs(bus, on_record, subject, start_seq, stream)


async def _follow_msgs(bus: Bus, on_record: Callable[[Record], None], subject: str, start_seq: int | None, stream: str) -> None:
    # nats-py's ordered consumer, for a client that cannot hand messages over raw.
    async def on_msg(msg: Msg) -> None:
        seq, _pending = _seq_and_pending(msg.reply)
        handed(on_record, Record(seq, msg.subject, msg.data, msg.headers))

    if start_seq is None:
        options: dict[str, object] = {"deliver_policy": DeliverPolicy.NEW}
    else:
        options = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "config": ConsumerConfig(opt_start_seq=start_seq)}
    try:
        sub = await bus.js.subscribe(subject, stream=stream, ordered_consumer=True, cb=on_msg, **options)  # type: ignore[arg-type]
    except nats.js.errors.NotFoundError:
        raise BusUnavailable(f"stream {stream} does not exist: run `rr streams init`") from None
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer subscribing to {subject}: {exc}") from None
    try:
        await wait_cancelled()  # also one that subscribe's request lost (a stopped leader never ended)
    finally:
        await sub.unsubscribe()


async def pending_from(bus: Bus, *, subject: str, start_seq: int, stream: str = EVENTS_STREAM) -> int:
    """How many stored messages on `subject` have a sequence >= `start_seq`."""
    config = ConsumerConfig(
        filter_subject=subject,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start_seq,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,  # cleaned up by the server even if this process dies
    )
    try:
        info = await bus.js.add_consumer(stream, config, timeout=5)
        await bus.js.delete_consumer(stream, info.name)
    except nats.js.errors.NotFoundError:
        raise BusUnavailable(f"stream {stream} does not exist: run `rr streams init`") from None
    except _SILENT as exc:
        raise BusUnavailable(f"JetStream did not answer counting {subject}: {exc}") from None
    return int(info.num_pending or 0)


async def start_for_last(bus: Bus, count: int, *, subject: str = ALL_EVENTS, stream: str = EVENTS_STREAM) -> tuple[int, int]:
    """Where to start to see the last `count` messages on `subject`: (start sequence, matches to skip first).

    Widens the window back from the end fourfold until it holds enough matches, so a
    filter on a rare subject costs a few server calls, not a read of the whole log.
    """
    last = await last_sequence(bus, stream)
    if count <= 0 or last == 0:
        return last + 1, 0
    window = count
    while True:
        start = max(1, last - window + 1)
        matches = await pending_from(bus, subject=subject, start_seq=start, stream=stream)
        if matches >= count or start == 1:
            return start, max(0, matches - count)
        window *= 4
