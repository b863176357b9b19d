"""Reading membership's part of the log: host transitions, with the elections that fence them, in log order."""

from __future__ import annotations

from eventbus.connection import Bus
from eventbus.errors import InvalidEvent
from eventbus.events import Event
from eventbus.history import Record, last_sequence, replay
from eventbus.integrity import decode_on
from eventbus.leasecopy import COPIES

HOST_EVENTS = "rr.evt.host.>"
LEADER_EVENTS = "rr.evt.leader.>"  # the fence needs the elections to tell a stale leader's decisions
# ... and the lease copies, to tell an election the lease gave from a made-up one
FENCE_EVENTS = (LEADER_EVENTS, COPIES)


async def membership_events(bus: Bus) -> list[tuple[int, Event]]:
    """Every HOST_*, LEADER_* and LEASE_WRITTEN event up to the end of the log now, by sequence; undecodable ones skipped."""
    end = await last_sequence(bus)
    records: list[Record] = []
    await replay(bus, records.append, subjects=(HOST_EVENTS, *FENCE_EVENTS), end_seq=end)
    decoded: list[tuple[int, Event]] = []
    for record in records:
        try:
            decoded.append((record.seq, decode_on(record.subject, record.data, record.headers)))
        except InvalidEvent:
            continue  # the projections report undecodable events; membership only needs the good ones
    return decoded
