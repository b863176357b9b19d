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
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Union

import msgspec
from msgspec import Meta

from eventbus.errors import InvalidEvent
from eventbus.limits import ID_MAX
from eventbus.subjects import event_subject

# ---- bounds every event obeys (checked when decoding, so a bad event is parked, not folded) ------
# Sized so that the largest event the catalogue allows (every string and list at its bound,
# plain ASCII) still fits MAX_EVENT_BYTES (tests/test_event_bounds.py builds it); the streams
# refuse anything larger (eventbus/streams.py sets max_msg_size from it).
MAX_EVENT_BYTES = 256 * 1024
REF_MAX = 2 * ID_MAX  # ids derived from others ("eval-<model id>", "<work id>-a<attempt>") fit too
NAME_MAX = 128  # short names: board and work types, roles, kinds, versions, hashes
TEXT_MAX = 2000  # sentences: reasons, messages, errors
PATH_MAX = 4096  # a file path (Linux PATH_MAX)
INPUT_PATH_MAX = 1024  # one input file of a job, many of which share one event (a batch path is ~150 characters)
INPUTS_MAX = 64  # input batches one training item names (the pipeline gives it at most 50)
TAIL_MAX = 16 * 1024  # a failed attempt's stderr tail
BIG = 2**53  # the largest integer every JSON reader keeps exactly; counts, sizes, epochs stay below
SECONDS_MAX = 1e9  # about 31 years
CHANGES_MAX = 64  # keys one CONFIG_CHANGED lists; more are summed up by the file's hash
CHANGE_VALUE_MAX = 1024  # JSON of one changed value; a larger one is recorded as its hash

Ref = Annotated[str, Meta(max_length=REF_MAX)]
Name = Annotated[str, Meta(max_length=NAME_MAX)]
Text = Annotated[str, Meta(max_length=TEXT_MAX)]
Path = Annotated[str, Meta(max_length=PATH_MAX)]
InputPath = Annotated[str, Meta(max_length=INPUT_PATH_MAX)]
Count = Annotated[int, Meta(ge=0, le=BIG)]
Small = Annotated[int, Meta(ge=0, le=1_000_000)]  # attempts, generations, games of one job
Players = Annotated[int, Meta(ge=1, le=64)]
Seconds = Annotated[float, Meta(ge=0, le=SECONDS_MAX)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
Percent = Annotated[float, Meta(ge=0, le=100)]
Gigabytes = Annotated[float, Meta(ge=0, le=1e9)]
Measure = Annotated[float, Meta(ge=-1e12, le=1e12)]  # a training metric, an Elo rating
Time = Annotated[dt.datetime, Meta(tz=True)]  # naive times cannot be compared with the UTC ones
Scalar = Union[Annotated[str, Meta(max_length=TEXT_MAX)], Annotated[int, Meta(ge=-BIG, le=BIG)], Measure, bool]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope shared by every event; subclasses add the facts."""

    # Unique and namespaced by publisher ("<node>:<random>"); also the Nats-Msg-Id, so a
    # retried publish is deduplicated by JetStream and no two nodes can collide.
    id: Ref = ""
    ts: Time | None = None  # UTC time the event was stamped by its publisher
    source: Ref = ""  # node id of the publisher
    v: Annotated[int, Meta(ge=1, le=1000)] = 1  # schema version of this event type
    epoch: Count | None = None  # leader fencing epoch, set on events that are a leader's decision
    trace: Name | None = None  # W3C traceparent of the operation that produced the event

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

    name: Name
    memory_gb: Gigabytes
    utilization: Percent | None = None  # percent, when known


class HostResources(msgspec.Struct, frozen=True, kw_only=True):
    """A host's resources as its agent measured them."""

    cpu_count: Count = 0
    cpu_percent: Percent = 0.0
    memory_gb: Gigabytes = 0.0
    memory_percent: Percent = 0.0
    disk_free_gb: Gigabytes = 0.0
    disk_percent: Percent = 0.0
    gpus: Annotated[list[GpuInfo], Meta(max_length=64)] = []


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


class ConfigChange(msgspec.Struct, frozen=True, kw_only=True):
    """One key that changed between two versions of a config file."""

    key: Ref
    old: Annotated[str, Meta(max_length=CHANGE_VALUE_MAX)] | None = None  # JSON of the old value; None when the key was added
    new: Annotated[str, Meta(max_length=CHANGE_VALUE_MAX)] | None = None  # JSON of the new value; None when the key was removed


# ---- leadership ---------------------------------------------------------------------


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


# ---- membership ---------------------------------------------------------------------


class HostOnline(Event, tag="HOST_ONLINE", kw_only=True):
    """A node was seen for the first time, or again after being offline."""

    aggregate: ClassVar[str] = "host"
    key_field: ClassVar[str] = "node"
    node: Ref
    reason: Text = "first_seen"
    roles: Annotated[list[Name], Meta(max_length=16)] = []
    version: Name = ""
    resources: HostResources | None = None


class HostOffline(Event, tag="HOST_OFFLINE", kw_only=True):
    """A node fell silent past the configured bound, or left cleanly."""

    aggregate: ClassVar[str] = "host"
    key_field: ClassVar[str] = "node"
    node: Ref
    reason: Text
    last_seen: Time | None = None
    silence_s: Seconds = 0.0


# ---- work lifecycle -----------------------------------------------------------------


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


# ---- training pipeline --------------------------------------------------------------


class SelfplayComplete(Event, tag="SELFPLAY_COMPLETE", kw_only=True):
    """A selfplay job wrote a batch of games on a node."""

    aggregate: ClassVar[str] = "data"
    key_field: ClassVar[str] = "batch_id"
    batch_id: Ref
    work_id: Ref
    node: Ref
    board_type: Name
    num_players: Players
    num_games: Small
    num_samples: Small = 0
    data: ArtifactRef | None = None
    model_id: Ref | None = None  # the model that played, None for random play
    attempt: Small = 0  # the work item's attempt that wrote it; 0: written before results carried one


class TrainingStarted(Event, tag="TRAINING_STARTED", kw_only=True):
    """A training job began on a node from these batches."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    node: Ref
    board_type: Name
    num_players: Players
    input_batches: Annotated[list[Ref], Meta(max_length=128)] = []
    parent_model: Ref | None = None


class TrainingComplete(Event, tag="TRAINING_COMPLETE", kw_only=True):
    """Training produced a candidate model checkpoint."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    work_id: Ref
    node: Ref
    board_type: Name
    num_players: Players
    checkpoint: ArtifactRef | None = None
    metrics: Annotated[dict[Name, Measure], Meta(max_length=64)] = {}
    input_batches: Annotated[list[Ref], Meta(max_length=128)] = []
    parent_model: Ref | None = None
    attempt: Small = 0  # the work item's attempt that wrote it; 0: written before results carried one


class EvaluationComplete(Event, tag="EVALUATION_COMPLETE", kw_only=True):
    """A candidate model played an opponent; results and rating."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    work_id: Ref
    node: Ref
    opponent: Name  # a model id, a config's pure-search anchor (e.g. hex8_2p-search16), or "random"
    games: Small
    wins: Small
    losses: Small
    draws: Small = 0
    win_rate: Fraction = 0.0
    elo: Measure | None = None  # the Elo difference the score implies (not a rating: see MODEL_RATED)
    sims: Small = 0  # simulations per move of every searching player (0: not reported)
    gate: bool = False  # the promotion gate's match, stopped by the sequential test
    verdict: Name = ""  # the gate's SPRT verdict: H1 (promote), H0, max_games
    llr: Measure | None = None  # ... and its log-likelihood ratio
    attempt: Small = 0  # the work item's attempt that wrote it; 0: written before results carried one


class ModelPromoted(Event, tag="MODEL_PROMOTED", kw_only=True):
    """The leader made a model the best for its config (a leader decision: carries epoch)."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    board_type: Name
    num_players: Players
    sha256: Name
    size_bytes: Count = 0
    generation: Small = 0
    reason: Text = ""
    evaluation_work_id: Ref | None = None
    previous_model: Ref | None = None


class ModelRated(Event, tag="MODEL_RATED", kw_only=True):
    """A player got its rating on its config's Elo scale (random play = 0), from games (a leader decision)."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref  # a model id, or the config's pure-search anchor
    board_type: Name
    num_players: Players
    elo: Measure
    interval: Measure = 0.0  # half-width of the 95% interval, opponents' uncertainty included
    games: Count = 0
    opponents: Annotated[list[Ref], Meta(max_length=128)] = []  # who it was rated against
    kind: Name = "candidate"  # candidate (promoted or not: see MODEL_PROMOTED), anchor, or tournament
    evaluation_work_id: Ref | None = None  # the evaluation or tournament item whose games it rests on


class ModelDistributed(Event, tag="MODEL_DISTRIBUTED", kw_only=True):
    """One node has installed a verified copy of a model."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    node: Ref
    sha256: Name
    seconds: Seconds = 0.0
    path: Path = ""


class ModelDistributionComplete(Event, tag="MODEL_DISTRIBUTION_COMPLETE", kw_only=True):
    """Every alive node that needs a model has it."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    nodes: Annotated[list[Ref], Meta(max_length=512)] = []
    seconds: Seconds = 0.0


class ModelDistributionFailed(Event, tag="MODEL_DISTRIBUTION_FAILED", kw_only=True):
    """One node could not install (or upload) a model this time; it retries after `retry_in_s`."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    node: Ref
    kind: Name  # corrupt, disk_full, missing, io, unavailable, checkpoint_missing
    reason: Text  # the sentence an operator reads
    attempt: Small = 1
    retry_in_s: Seconds = 0.0
    object_nuid: Ref = ""  # the stored object version that was read, for a corrupt one


# ---- data sync ----------------------------------------------------------------------


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


# ---- configuration ------------------------------------------------------------------


class ConfigChanged(Event, tag="CONFIG_CHANGED", kw_only=True):
    """A config file took a new content; what changed, key by key."""

    aggregate: ClassVar[str] = "config"
    key_field: ClassVar[str] = "name"
    name: Name
    path: Path = ""
    sha256: Name = ""
    changes: Annotated[list[ConfigChange], Meta(max_length=CHANGES_MAX)] = []


# ---- quarantine -----------------------------------------------------------------------


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


AnyEvent = Union[
    LeaderElected,
    LeaderLost,
    LeaseWritten,
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
    ModelRated,
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


def strict_decoder(kind: Any) -> Callable[[bytes], Any]:
    """A decoder of `kind` whose every failure is InvalidEvent (oversized, too deep, bad JSON, a bound broken).

    Nothing else may escape: a poison message must be parked or recorded, never crash its reader.
    """
    decoder = msgspec.json.Decoder(kind)

    def decode_strict(data: bytes) -> Any:
        if len(data) > MAX_EVENT_BYTES:
            raise InvalidEvent(f"message of {len(data)} bytes is larger than the {MAX_EVENT_BYTES} an event may be")
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise InvalidEvent(str(exc)[:TEXT_MAX]) from None
        except RecursionError:  # msgspec recurses per nesting level; JSON nested thousands deep ends here
            raise InvalidEvent("JSON nested too deeply") from None
        except Exception as exc:  # noqa: BLE001 - whatever else a hostile payload triggers is still invalid
            raise InvalidEvent(f"{type(exc).__name__}: {exc}"[:TEXT_MAX]) from None

    return decode_strict


_decode = strict_decoder(AnyEvent)


def encode(event: Event) -> bytes:
    """One line of JSON for the wire."""
    return _encoder.encode(event)


def decode(data: bytes) -> Event:
    """Decode one event; raises InvalidEvent naming what is wrong (bad JSON, unknown type, a field, a bound)."""
    return _decode(data)  # type: ignore[no-any-return]


def checked(event: Event) -> bytes:
    """The event's wire form, if every reader will accept it; else InvalidEvent naming the field and bound."""
    data = encode(event)
    try:
        decode(data)
    except InvalidEvent as exc:
        raise InvalidEvent(f"{event.type_name()} {event.aggregate_id()[:ID_MAX]!r} breaks the event schema: {exc}") from None
    return data


def new_event_id(source: str) -> str:
    """A unique event id namespaced by its publisher, so dedupe never crosses nodes."""
    return f"{source}:{os.urandom(12).hex()}"


def utcnow() -> dt.datetime:
    """Current time in UTC, the only clock events are stamped with."""
    return dt.datetime.now(dt.UTC)


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
