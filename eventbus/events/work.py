"""A work item's lifecycle: added, assigned, run attempt by attempt, completed, failed, cancelled."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

from eventbus.events.base import Event
from eventbus.events.bounds import INPUTS_MAX, TAIL_MAX, Count, Fraction, InputPath, Name, Path, Players, Ref, Scalar, Seconds, Small, Text, Time


class ArtifactRef(msgspec.Struct, frozen=True, kw_only=True):
    """A file some job produced: where it is, how big, and its SHA-256."""

    path: Path
    size_bytes: Count
    sha256: Name
    node: Ref = ""


class AttemptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Why one attempt of a work item ended without completing it."""

    attempt: Small
    node: Ref
    reason: Text


class BatchInput(msgspec.Struct, frozen=True, kw_only=True):
    """One selfplay batch a training item reads: its id, and its path on the node that wrote it."""

    batch_id: Ref
    path: InputPath


class WorkAdded(Event, tag="WORK_ADDED", kw_only=True):
    """A work item entered the queue (the seeds' POST /work/add)."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    work_type: Name  # selfplay, training, evaluation, tournament, sync
    board_type: Name
    num_players: Players
    num_games: Small = 0
    priority: Annotated[int, Meta(ge=-1_000_000, le=1_000_000)] | None = None
    target_node: Ref | None = None
    params: Annotated[dict[Name, Scalar], Meta(max_length=64)] = {}
    requested_by: Text = ""
    # A training's batches, typed: joined into one `params` string they outgrew TEXT_MAX once a
    # config had enough batches, and the event was refused.
    inputs: Annotated[list[BatchInput], Meta(max_length=INPUTS_MAX)] = []

    def training_inputs(self) -> list[BatchInput]:
        """The batches a training reads: `inputs`, or for items without them the comma-joined params.

        Items added before `inputs` existed, and operators' items (`params.data` alone), name them
        in `params.data` (paths) and `params.input_batches` (ids); a path whose id is not known
        gets batch_id "".
        """
        if self.inputs:
            return list(self.inputs)
        paths = _joined(self.params.get("data"))
        ids = _joined(self.params.get("input_batches"))
        if len(ids) != len(paths):
            ids = [""] * len(paths)
        return [BatchInput(batch_id=b, path=p) for b, p in zip(ids, paths)]

    def input_batch_ids(self) -> list[str]:
        """The ids of the batches a training reads: from `inputs`, or `params.input_batches` on items without them."""
        if self.inputs:
            return [i.batch_id for i in self.inputs]
        return _joined(self.params.get("input_batches"))


def _joined(value: Scalar | None) -> list[str]:
    """The parts of a comma-joined param, none empty."""
    return [part for part in str(value or "").split(",") if part]


class WorkAssigned(Event, tag="WORK_ASSIGNED", kw_only=True):
    """The leader gave one attempt of a work item to a node, until a deadline."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    node: Ref
    attempt: Small
    deadline: Time


class WorkStarted(Event, tag="WORK_STARTED", kw_only=True):
    """A node started running its attempt of a work item."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    node: Ref
    attempt: Small
    pid: Annotated[int, Meta(ge=0, le=2**31)] | None = None


class WorkProgress(Event, tag="WORK_PROGRESS", kw_only=True):
    """A running attempt is alive and this far along."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    node: Ref
    attempt: Small
    fraction: Fraction | None = None  # 0..1 when the job can tell
    message: Text = ""


class WorkCompleted(Event, tag="WORK_COMPLETED", kw_only=True):
    """An attempt finished successfully, with what it produced."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    node: Ref
    attempt: Small
    duration_s: Seconds = 0.0
    exit_code: Annotated[int, Meta(ge=-(2**31), le=2**31)] = 0
    outputs: Annotated[list[ArtifactRef], Meta(max_length=16)] = []


class WorkAttemptFailed(Event, tag="WORK_ATTEMPT_FAILED", kw_only=True):
    """One attempt failed (exit status, timeout, node lost); the item may be tried again."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    node: Ref
    attempt: Small
    reason: Text
    exit_code: Annotated[int, Meta(ge=-(2**31), le=2**31)] | None = None
    stderr_tail: Annotated[str, Meta(max_length=TAIL_MAX)] = ""
    cause: Text = ""  # one line: the last exception line of the job's stderr, when it printed one


class WorkHandedBack(Event, tag="WORK_HANDED_BACK", kw_only=True):
    """An attempt ended without fault of its job (its worker stopped, its node was removed); not a failed attempt.

    The item goes back to pending and runs again; handed-back attempts never count towards
    max_attempts.
    """

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    node: Ref
    attempt: Small
    reason: Text


class WorkFailed(Event, tag="WORK_FAILED", kw_only=True):
    """A work item was given up on, with the reason of each attempt."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    reason: Text
    attempts: Annotated[list[AttemptOutcome], Meta(max_length=32)] = []


class WorkCancelled(Event, tag="WORK_CANCELLED", kw_only=True):
    """A work item was cancelled; a running attempt is to be stopped."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    reason: Text = ""
    requested_by: Text = ""


class WorkUnschedulable(Event, tag="WORK_UNSCHEDULABLE", kw_only=True):
    """The leader found that no alive node can run a pending item (its target is gone, or no node has the capability)."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    reason: Text  # which node or capability is missing, e.g. "needs >= 24 GB GPU memory; alive: vm (CPU only)"


class WorkSchedulable(Event, tag="WORK_SCHEDULABLE", kw_only=True):
    """A pending item that no node could run can run again (a node came back or the hosts file changed)."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    reason: Text = ""
