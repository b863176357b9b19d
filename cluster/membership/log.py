"""Reading membership's part of the log: host transitions, with the elections that fence them, in log order."""

from __future__ import annotations

from eventbus.connection import Bus
from eventbus.errors import InvalidEvent
from eventbus.events import Event
from eventbus.history import Record, last_sequence, replay
from eventbus.integrity import decode_on

HOST_EVENTS = "rr.evt.host.>"
LEADER_EVENTS = "rr.evt.leader.>"  # the fence needs the elections to tell a stale leader's decisions


async def membership_events(bus: Bus) -> list[tuple[int, Event]]:
    """Every HOST_* and LEADER_* event up to the end of the log now, by sequence; undecodable ones skipped."""
    end = await last_sequence(bus)
    records: list[Record] = []
    for subject in (HOST_EVENTS, LEADER_EVENTS):
        await replay(bus, records.append, subject=subject, end_seq=end)
    records.sort(key=lambda r: r.seq)
    decoded: list[tuple[int, Event]] = []
    for record in records:
        try:
            decoded.append((record.seq, decode_on(record.subject, record.data)))
        except InvalidEvent:
            continue  # the projections report undecodable events; membership only needs the good ones
    return decoded
