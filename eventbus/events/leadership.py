"""Who leads: a node won or lost a singleton role's lease, and the server's copy of each lease write."""

from __future__ import annotations

from typing import ClassVar

from eventbus.events.base import Event
from eventbus.events.bounds import Count, Name, Ref, Seconds, Text


class LeaderElected(Event, tag="LEADER_ELECTED", kw_only=True):
    """A node won the lease of a singleton role; `epoch` is the lease's fencing epoch."""

    aggregate: ClassVar[str] = "leader"
    key_field: ClassVar[str] = "role"
    role: Ref
    node: Ref
    ttl_s: Seconds = 0.0
    previous_node: Ref | None = None


class LeaderLost(Event, tag="LEADER_LOST", kw_only=True):
    """A node stopped leading a role (resigned, could not renew, or was superseded)."""

    aggregate: ClassVar[str] = "leader"
    key_field: ClassVar[str] = "role"
    role: Ref
    node: Ref
    reason: Text


class LeaseWritten(Event, tag="LEASE_WRITTEN", kw_only=True):
    """The server's copy of one write of a role's lease key (a JetStream source of the lease bucket).

    No client publishes it (the permissions deny rr.evt.lease.> to everyone): the server copies
    each write of the bucket into the log, and readers build this event from the copy's subject,
    headers and body (eventbus/leasecopy.py), never from a body that claims to be one. `revision`
    is the write's revision in the bucket (the fencing epoch when `acquiring`).
    """

    aggregate: ClassVar[str] = "lease"
    key_field: ClassVar[str] = "role"
    role: Ref
    revision: Count
    node: Ref | None = None  # the holder the write names; None for a delete or an expiry marker
    incarnation: Ref | None = None
    acquiring: bool = False  # the write that took the lease (its value's epoch is 0): a term's first
    state: Name = "held"  # held, deleted, expired, purged or unreadable
