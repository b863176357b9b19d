"""Outputs an operator no longer trusts (a node's, a batch, a model), and the quarantines lifted."""

from __future__ import annotations

from typing import ClassVar

from eventbus.events.base import Event
from eventbus.events.bounds import Name, Ref, Text, Time


class OutputsQuarantined(Event, tag="OUTPUTS_QUARANTINED", kw_only=True):
    """An operator declared outputs untrustworthy: a node's since a time, one batch, or one model.

    What derives from them (models trained on the batches, games those models played, ...)
    is tainted with them (projections/taint.py follows the lineage); the leader rolls a
    tainted promoted model back, and training and sync skip tainted batches.
    """

    aggregate: ClassVar[str] = "quarantine"
    key_field: ClassVar[str] = "quarantine_id"
    quarantine_id: Ref
    kind: Name  # node, batch or model
    target: Ref  # the node, batch or model id
    since: Time | None = None  # for a node: outputs reported at or after this time
    reason: Text
    requested_by: Text = ""


class QuarantineLifted(Event, tag="QUARANTINE_LIFTED", kw_only=True):
    """An operator withdrew a quarantine: what it tainted is trusted again (unless another taints it)."""

    aggregate: ClassVar[str] = "quarantine"
    key_field: ClassVar[str] = "quarantine_id"
    quarantine_id: Ref
    reason: Text = ""
    requested_by: Text = ""
