"""Where a node's first worker starts reading assignments: at the node's newest HOST_ONLINE.

The leader assigns to a node from its agent's first beat, whether or not the node's worker has
ever run. A worker's assignments durable that, when first created, delivered only assignments
stored from then on missed the node's first ones whenever the agent beat first (systemd units,
ops/fleet, any start order): they stayed assigned, the node looked idle, and the leader tried them
again only after `scheduler.progress_timeout_s` (300 s). Started at the node's newest HOST_ONLINE,
the durable delivers every assignment of the node's current membership; the leader ended the
attempts of earlier ones as lost when the node went offline. Each is judged against its item's
history as any other (one already failed, completed or reassigned is ignored), and other nodes'
assignments in between are skipped as always: from one membership's start, not a year of log.
"""

from __future__ import annotations

from eventbus.connection import Bus
from eventbus.events import HostOnline
from eventbus.history import last_on, last_sequence
from eventbus.subjects import aggregate_type_filter


async def membership_start(bus: Bus, node: str) -> int:
    """The stream sequence of `node`'s newest HOST_ONLINE; the log's next sequence when the node never came online."""
    # The log's end is read first: a HOST_ONLINE stored after this read is after the end too, so
    # nothing stored between the two reads and the durable's creation is left behind.
    end = await last_sequence(bus)
    online = await last_on(bus, aggregate_type_filter(HostOnline.aggregate, node, HostOnline.type_name()))
    return online.seq if online is not None else end + 1
