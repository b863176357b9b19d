"""Game data moving between nodes: a transfer the leader planned, and how it ended."""

from __future__ import annotations

from typing import ClassVar

from eventbus.events.base import Event
from eventbus.events.bounds import Count, Name, Ref, Seconds, Text


class DataSyncPlanned(Event, tag="DATA_SYNC_PLANNED", kw_only=True):
    """The leader planned to copy a batch of game data to a node."""

    aggregate: ClassVar[str] = "data"
    key_field: ClassVar[str] = "batch_id"
    batch_id: Ref
    transfer_id: Ref
    from_node: Ref
    to_node: Ref
    size_bytes: Count = 0
    reason: Text = ""


class DataSyncComplete(Event, tag="DATA_SYNC_COMPLETE", kw_only=True):
    """A planned transfer ended; `ok` tells whether the copy was verified."""

    aggregate: ClassVar[str] = "data"
    key_field: ClassVar[str] = "batch_id"
    batch_id: Ref
    transfer_id: Ref
    to_node: Ref
    ok: bool = True
    sha256: Name = ""
    size_bytes: Count = 0
    seconds: Seconds = 0.0
    error: Text = ""
