"""The event catalog: every state change in the cluster is one of these facts.

Each event is a frozen msgspec Struct in one tagged union; on the wire it is one line of
JSON whose `type` field is the upper-case event name. Every event shares the envelope
declared on `Event` (id, ts, source, v, epoch, trace).

One module per domain, so a reader finds an event by what it is about:

    bounds        the bounds every field obeys (Ref, Name, Text, Count ...; MAX_EVENT_BYTES)
    base          the envelope (`Event`) and the stamping that fills it
    leadership    LEADER_ELECTED, LEADER_LOST, LEASE_WRITTEN
    membership    HOST_ONLINE, HOST_OFFLINE (and a host's resources)
    work          a work item's lifecycle, WORK_ADDED to WORK_SCHEDULABLE (and the artifacts a job wrote)
    results       what the jobs report: SELFPLAY_COMPLETE, TRAINING_STARTED/COMPLETE, EVALUATION_COMPLETE
    models        MODEL_PROMOTED, MODEL_RATED, MODEL_DISTRIBUTED and its completion and failure
    data          DATA_SYNC_PLANNED, DATA_SYNC_COMPLETE
    config        CONFIG_CHANGED
    quarantine    OUTPUTS_QUARANTINED, QUARANTINE_LIFTED
    registry      the tagged union of every type (`AnyEvent`) and `EVENT_TYPES` by wire name
    codec         encode, decode and `checked`, every decoding failure an InvalidEvent

Import from here (`from eventbus.events import WorkAdded`): this package re-exports every public
name of its modules, and the modules may move between files.

Schema evolution rule (tested in tests/test_events.py):
  1. A field may be ADDED to an event only with a default, so events written before it
     existed still decode. Readers ignore fields they do not know, so events written by a
     newer schema decode in older readers too. `v` stays the same.
  2. A field is never renamed, removed or given another type in place. Such a change adds
     a new event type (or bumps `v` with an upgrader that rewrites the old shape before
     decoding); no event in the catalog has needed one yet.
"""

from eventbus.events.base import Event, new_event_id, stamp, utcnow
from eventbus.events.bounds import (
    BIG,
    CHANGE_VALUE_MAX,
    CHANGES_MAX,
    INPUT_PATH_MAX,
    INPUTS_MAX,
    MAX_EVENT_BYTES,
    NAME_MAX,
    PATH_MAX,
    REF_MAX,
    SECONDS_MAX,
    TAIL_MAX,
    TEXT_MAX,
    Count,
    Fraction,
    Gigabytes,
    InputPath,
    Measure,
    Name,
    Path,
    Percent,
    Players,
    Ref,
    Scalar,
    Seconds,
    Small,
    Text,
    Time,
)
from eventbus.events.codec import by_type_decoder, checked, decode, encode, strict_decoder
from eventbus.events.config import ConfigChange, ConfigChanged
from eventbus.events.data import DataSyncComplete, DataSyncPlanned
from eventbus.events.leadership import LeaderElected, LeaderLost, LeaseWritten
from eventbus.events.membership import GpuInfo, HostOffline, HostOnline, HostResources
from eventbus.events.models import ModelDistributed, ModelDistributionComplete, ModelDistributionFailed, ModelPromoted, ModelRated
from eventbus.events.quarantine import OutputsQuarantined, QuarantineLifted
from eventbus.events.registry import EVENT_TYPES, AnyEvent
from eventbus.events.results import EvaluationComplete, SelfplayComplete, TrainingComplete, TrainingStarted
from eventbus.events.work import (
    ArtifactRef,
    AttemptOutcome,
    BatchInput,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
    WorkHandedBack,
    WorkProgress,
    WorkSchedulable,
    WorkStarted,
    WorkUnschedulable,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "REF_MAX",
    "NAME_MAX",
    "TEXT_MAX",
    "PATH_MAX",
    "INPUT_PATH_MAX",
    "INPUTS_MAX",
    "TAIL_MAX",
    "BIG",
    "SECONDS_MAX",
    "CHANGES_MAX",
    "CHANGE_VALUE_MAX",
    "Ref",
    "Name",
    "Text",
    "Path",
    "InputPath",
    "Count",
    "Small",
    "Players",
    "Seconds",
    "Fraction",
    "Percent",
    "Gigabytes",
    "Measure",
    "Time",
    "Scalar",
    "Event",
    "GpuInfo",
    "HostResources",
    "ArtifactRef",
    "AttemptOutcome",
    "ConfigChange",
    "LeaderElected",
    "LeaderLost",
    "LeaseWritten",
    "HostOnline",
    "HostOffline",
    "BatchInput",
    "WorkAdded",
    "WorkAssigned",
    "WorkStarted",
    "WorkProgress",
    "WorkCompleted",
    "WorkAttemptFailed",
    "WorkHandedBack",
    "WorkFailed",
    "WorkCancelled",
    "WorkUnschedulable",
    "WorkSchedulable",
    "SelfplayComplete",
    "TrainingStarted",
    "TrainingComplete",
    "EvaluationComplete",
    "ModelPromoted",
    "ModelRated",
    "ModelDistributed",
    "ModelDistributionComplete",
    "ModelDistributionFailed",
    "DataSyncPlanned",
    "DataSyncComplete",
    "ConfigChanged",
    "OutputsQuarantined",
    "QuarantineLifted",
    "AnyEvent",
    "EVENT_TYPES",
    "strict_decoder",
    "by_type_decoder",
    "encode",
    "decode",
    "checked",
    "new_event_id",
    "utcnow",
    "stamp",
]
