"""The nodes online at a point of the log, from each membership subject's newest record there, pure.

Every membership subject is one node's and one event type's (`rr.evt.host.<node>.<TYPE>.<source>`),
so a node's newest membership record is the newest of its subjects' newest ones. A fold from the
log's start (`recording.record`, `projections/cluster.py`) leaves a node online exactly when that
record is a HOST_ONLINE (another HOST_ONLINE replaces what it reported; a HOST_OFFLINE of a node
already offline changes nothing), with what that record reported: so these few records, which the
server keeps an index of, stand for the whole membership history before the point.
"""

from __future__ import annotations

from collections.abc import Iterable

from eventbus.events import Event, HostOffline, HostOnline


def online_at(newest: Iterable[tuple[int, Event]]) -> list[tuple[int, HostOnline]]:
    """Each online node's newest HOST_ONLINE, by sequence, from the newest record of each membership subject."""
    last: dict[str, tuple[int, Event]] = {}
    for seq, event in newest:
        if isinstance(event, (HostOnline, HostOffline)) and seq > last.get(event.node, (0, event))[0]:
            last[event.node] = (seq, event)
    return sorted((seq, event) for seq, event in last.values() if isinstance(event, HostOnline))
