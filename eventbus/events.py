"""The event catalog: every state change in the cluster is one of these facts.

Each event is a frozen msgspec Struct in one tagged union; on the wire it is one line of
JSON whose `type` field is the upper-case event name. Every event shares the envelope
declared on `Event` (id, ts, source, v, epoch, trace).

Schema evolution rule (tested in tests/test_events.py):
  1. A field may be ADDED to an event only with a default, so events written before it
     existed still decode. Readers ignore fields they do not know, so events written by a
     newer schema decode in older readers too. `v` stays the same.
  2. A field is never renamed, removed or given another type in place. Such a change adds
     a new event type (or bumps `v` with an upgrader that rewrites the old shape before
     decoding); no event in the catalog has needed one yet.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import ClassVar, Union

import msgspec

from eventbus.errors import InvalidEvent
from eventbus.subjects import event_subject

Scalar = Union[str, int, float, bool]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope shared by every event; subclasses add the facts."""

    # Unique and namespaced by publisher ("<node>:<random>"); also the Nats-Msg-Id, so a
    # retried publish is deduplicated by JetStream and no two nodes can collide.
    id: str = ""
    ts: dt.datetime | None = None  # UTC time the event was stamped by its publisher
    source: str = ""  # node id of the publisher
    v: int = 1  # schema version of this event type
    epoch: int | None = None  # leader fencing epoch, set on events that are a leader's decision
    trace: str | None = None  # W3C traceparent of the operation that produced the event

    # Which aggregate the event belongs to, and the field naming its id; both go in the subject.
    aggregate: ClassVar[str] = ""
    key_field: ClassVar[str] = ""

    @classmethod
    def type_name(cls) -> str:
        """The upper-case name this event has on the wire."""
        tag = cls.__struct_config__.tag
        assert isinstance(tag, str)
        return tag

    def aggregate_id(self) -> str:
        """Id of the aggregate this event is about (a node, a work item, a model ...)."""
        return str(getattr(self, self.key_field))

    def subject(self) -> str:
        """Subject this event is published on: rr.evt.<aggregate>.<id>.<TYPE>.<source>."""
        return event_subject(self.aggregate, self.aggregate_id(), self.type_name(), self.source)


# ---- value objects carried inside events ----------------------------------------------


class GpuInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU of a host."""

    name: str
    memory_gb: float
    utilization: float | None = None  # percent, when known


class HostResources(msgspec.Struct, frozen=True, kw_only=True):
    """A host's resources as its agent measured them."""

    cpu_count: int = 0
    cpu_percent: float = 0.0
    memory_gb: float = 0.0
    memory_percent: float = 0.0
    disk_free_gb: float = 0.0
    disk_percent: float = 0.0
    gpus: list[GpuInfo] = []


class ArtifactRef(msgspec.Struct, frozen=True, kw_only=True):
    """A file some job produced: where it is, how big, and its SHA-256."""

    path: str
    size_bytes: int
    sha256: str
    node: str = ""


class AttemptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Why one attempt of a work item ended without completing it."""

    attempt: int
    node: str
    reason: str


class ConfigChange(msgspec.Struct, frozen=True, kw_only=True):
    """One key that changed between two versions of a config file."""

    key: str
    old: str | None = None  # JSON of the old value; None when the key was added
    new: str | None = None  # JSON of the new value; None when the key was removed


# ---- leadership ---------------------------------------------------------------------


class LeaderElected(Event, tag="LEADER_ELECTED", kw_only=True):
    """A node won the lease of a singleton role; `epoch` is the lease's fencing epoch."""

    aggregate: ClassVar[str] = "leader"
    key_field: ClassVar[str] = "role"
    role: str
    node: str
    ttl_s: float = 0.0
    previous_node: str | None = None


class LeaderLost(Event, tag="LEADER_LOST", kw_only=True):
    """A node stopped leading a role (resigned, could not renew, or was superseded)."""

    aggregate: ClassVar[str] = "leader"
    key_field: ClassVar[str] = "role"
    role: str
    node: str
    reason: str


# ---- membership ---------------------------------------------------------------------


class HostOnline(Event, tag="HOST_ONLINE", kw_only=True):
    """A node was seen for the first time, or again after being offline."""

    aggregate: ClassVar[str] = "host"
    key_field: ClassVar[str] = "node"
    node: str
    reason: str = "first_seen"
    roles: list[str] = []
    version: str = ""
    resources: HostResources | None = None


class HostOffline(Event, tag="HOST_OFFLINE", kw_only=True):
    """A node fell silent past the configured bound, or left cleanly."""

    aggregate: ClassVar[str] = "host"
    key_field: ClassVar[str] = "node"
    node: str
    reason: str
    last_seen: dt.datetime | None = None
    silence_s: float = 0.0


# ---- work lifecycle -----------------------------------------------------------------


class WorkAdded(Event, tag="WORK_ADDED", kw_only=True):
    """A work item entered the queue (the seeds' POST /work/add)."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    work_type: str  # selfplay, training, evaluation, tournament, sync
    board_type: str
    num_players: int
    num_games: int = 0
    priority: int | None = None
    target_node: str | None = None
    params: dict[str, Scalar] = {}
    requested_by: str = ""


class WorkAssigned(Event, tag="WORK_ASSIGNED", kw_only=True):
    """The leader gave one attempt of a work item to a node, until a deadline."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    node: str
    attempt: int
    deadline: dt.datetime


class WorkStarted(Event, tag="WORK_STARTED", kw_only=True):
    """A node started running its attempt of a work item."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    node: str
    attempt: int
    pid: int | None = None


class WorkProgress(Event, tag="WORK_PROGRESS", kw_only=True):
    """A running attempt is alive and this far along."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    node: str
    attempt: int
    fraction: float | None = None  # 0..1 when the job can tell
    message: str = ""


class WorkCompleted(Event, tag="WORK_COMPLETED", kw_only=True):
    """An attempt finished successfully, with what it produced."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    node: str
    attempt: int
    duration_s: float = 0.0
    exit_code: int = 0
    outputs: list[ArtifactRef] = []


class WorkAttemptFailed(Event, tag="WORK_ATTEMPT_FAILED", kw_only=True):
    """One attempt failed (exit status, timeout, node lost); the item may be tried again."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    node: str
    attempt: int
    reason: str
    exit_code: int | None = None
    stderr_tail: str = ""
    cause: str = ""  # one line: the last exception line of the job's stderr, when it printed one


class WorkHandedBack(Event, tag="WORK_HANDED_BACK", kw_only=True):
    """An attempt ended without fault of its job (its worker stopped, its node was removed); not a failed attempt.

    The item goes back to pending and runs again; handed-back attempts never count towards
    max_attempts.
    """

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    node: str
    attempt: int
    reason: str


class WorkFailed(Event, tag="WORK_FAILED", kw_only=True):
    """A work item was given up on, with the reason of each attempt."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    reason: str
    attempts: list[AttemptOutcome] = []


class WorkCancelled(Event, tag="WORK_CANCELLED", kw_only=True):
    """A work item was cancelled; a running attempt is to be stopped."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    reason: str = ""
    requested_by: str = ""


class WorkUnschedulable(Event, tag="WORK_UNSCHEDULABLE", kw_only=True):
    """The leader found that no alive node can run a pending item (its target is gone, or no node has the capability)."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    reason: str  # which node or capability is missing, e.g. "needs >= 24 GB GPU memory; alive: vm (CPU only)"


class WorkSchedulable(Event, tag="WORK_SCHEDULABLE", kw_only=True):
    """A pending item that no node could run can run again (a node came back or the hosts file changed)."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    reason: str = ""


# ---- training pipeline --------------------------------------------------------------


class SelfplayComplete(Event, tag="SELFPLAY_COMPLETE", kw_only=True):
    """A selfplay job wrote a batch of games on a node."""

    aggregate: ClassVar[str] = "data"
    key_field: ClassVar[str] = "batch_id"
    batch_id: str
    work_id: str
    node: str
    board_type: str
    num_players: int
    num_games: int
    num_samples: int = 0
    data: ArtifactRef | None = None
    model_id: str | None = None  # the model that played, None for random play


class TrainingStarted(Event, tag="TRAINING_STARTED", kw_only=True):
    """A training job began on a node from these batches."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: str
    node: str
    board_type: str
    num_players: int
    input_batches: list[str] = []
    parent_model: str | None = None


class TrainingComplete(Event, tag="TRAINING_COMPLETE", kw_only=True):
    """Training produced a candidate model checkpoint."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: str
    work_id: str
    node: str
    board_type: str
    num_players: int
    checkpoint: ArtifactRef | None = None
    metrics: dict[str, float] = {}
    input_batches: list[str] = []
    parent_model: str | None = None


class EvaluationComplete(Event, tag="EVALUATION_COMPLETE", kw_only=True):
    """A candidate model played an opponent; results and rating."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: str
    work_id: str
    node: str
    opponent: str  # a model id, or "random"
    games: int
    wins: int
    losses: int
    draws: int = 0
    win_rate: float = 0.0
    elo: float | None = None


class ModelPromoted(Event, tag="MODEL_PROMOTED", kw_only=True):
    """The leader made a model the best for its config (a leader decision: carries epoch)."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: str
    board_type: str
    num_players: int
    sha256: str
    size_bytes: int = 0
    generation: int = 0
    reason: str = ""
    evaluation_work_id: str | None = None
    previous_model: str | None = None


class ModelDistributed(Event, tag="MODEL_DISTRIBUTED", kw_only=True):
    """One node has installed a verified copy of a model."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: str
    node: str
    sha256: str
    seconds: float = 0.0
    path: str = ""


class ModelDistributionComplete(Event, tag="MODEL_DISTRIBUTION_COMPLETE", kw_only=True):
    """Every alive node that needs a model has it."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: str
    nodes: list[str] = []
    seconds: float = 0.0


class ModelDistributionFailed(Event, tag="MODEL_DISTRIBUTION_FAILED", kw_only=True):
    """One node could not install (or upload) a model this time; it retries after `retry_in_s`."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: str
    node: str
    kind: str  # corrupt, disk_full, missing, io, unavailable, checkpoint_missing
    reason: str  # the sentence an operator reads
    attempt: int = 1
    retry_in_s: float = 0.0
    object_nuid: str = ""  # the stored object version that was read, for a corrupt one


# ---- data sync ----------------------------------------------------------------------


class DataSyncPlanned(Event, tag="DATA_SYNC_PLANNED", kw_only=True):
    """The leader planned to copy a batch of game data to a node."""

    aggregate: ClassVar[str] = "data"
    key_field: ClassVar[str] = "batch_id"
    batch_id: str
    transfer_id: str
    from_node: str
    to_node: str
    size_bytes: int = 0
    reason: str = ""


class DataSyncComplete(Event, tag="DATA_SYNC_COMPLETE", kw_only=True):
    """A planned transfer ended; `ok` tells whether the copy was verified."""

    aggregate: ClassVar[str] = "data"
    key_field: ClassVar[str] = "batch_id"
    batch_id: str
    transfer_id: str
    to_node: str
    ok: bool = True
    sha256: str = ""
    size_bytes: int = 0
    seconds: float = 0.0
    error: str = ""


# ---- configuration ------------------------------------------------------------------


class ConfigChanged(Event, tag="CONFIG_CHANGED", kw_only=True):
    """A config file took a new content; what changed, key by key."""

    aggregate: ClassVar[str] = "config"
    key_field: ClassVar[str] = "name"
    name: str
    path: str = ""
    sha256: str = ""
    changes: list[ConfigChange] = []


# ---- quarantine -----------------------------------------------------------------------


class OutputsQuarantined(Event, tag="OUTPUTS_QUARANTINED", kw_only=True):
    """An operator declared outputs untrustworthy: a node's since a time, one batch, or one model.

    What derives from them (models trained on the batches, games those models played, ...)
    is tainted with them (projections/taint.py follows the lineage); the leader rolls a
    tainted promoted model back, and training and sync skip tainted batches.
    """

    aggregate: ClassVar[str] = "quarantine"
    key_field: ClassVar[str] = "quarantine_id"
    quarantine_id: str
    kind: str  # node, batch or model
    target: str  # the node, batch or model id
    since: dt.datetime | None = None  # for a node: outputs reported at or after this time
    reason: str
    requested_by: str = ""


class QuarantineLifted(Event, tag="QUARANTINE_LIFTED", kw_only=True):
    """An operator withdrew a quarantine: what it tainted is trusted again (unless another taints it)."""

    aggregate: ClassVar[str] = "quarantine"
    key_field: ClassVar[str] = "quarantine_id"
    quarantine_id: str
    reason: str = ""
    requested_by: str = ""


AnyEvent = Union[
    LeaderElected,
    LeaderLost,
    HostOnline,
    HostOffline,
    WorkAdded,
    WorkAssigned,
    WorkStarted,
    WorkProgress,
    WorkCompleted,
    WorkAttemptFailed,
    WorkHandedBack,
    WorkFailed,
    WorkCancelled,
    WorkUnschedulable,
    WorkSchedulable,
    SelfplayComplete,
    TrainingStarted,
    TrainingComplete,
    EvaluationComplete,
    ModelPromoted,
    ModelDistributed,
    ModelDistributionComplete,
    ModelDistributionFailed,
    DataSyncPlanned,
    DataSyncComplete,
    ConfigChanged,
    OutputsQuarantined,
    QuarantineLifted,
]

EVENT_TYPES: dict[str, type[Event]] = {t.type_name(): t for t in AnyEvent.__args__}  # type: ignore[attr-defined]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def encode(event: Event) -> bytes:
    """One line of JSON for the wire."""
    return _encoder.encode(event)


def decode(data: bytes) -> Event:
    """Decode one event; raises InvalidEvent naming what is wrong (bad JSON, unknown type, a field)."""
    try:
        return _decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.DecodeError as exc:
        raise InvalidEvent(str(exc)) from None


def new_event_id(source: str) -> str:
    """A unique event id namespaced by its publisher, so dedupe never crosses nodes."""
    return f"{source}:{os.urandom(12).hex()}"


def utcnow() -> dt.datetime:
    """Current time in UTC, the only clock events are stamped with."""
    return dt.datetime.now(dt.timezone.utc)


def stamp(event: Event, source: str, trace: str | None = None) -> Event:
    """Fill the envelope of an event that has none yet; a stamped event is left as it is.

    Keeping the id of an already stamped event is what makes a retry idempotent.
    """
    if event.id:
        return event
    return msgspec.structs.replace(
        event,
        id=new_event_id(source),
        ts=utcnow(),
        source=event.source or source,
        trace=event.trace or trace,
    )
