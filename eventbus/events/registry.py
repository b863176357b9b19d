"""The catalogue: one tagged union of every event type, and each type by its wire name.

A new event type is added here as well as in its domain's module: the union is what decoding
accepts, and tests/test_event_modules.py fails on a type that is declared but not listed.
"""

from __future__ import annotations

from typing import Union, get_args

from eventbus.events import config, data, leadership, membership, models, quarantine, results, work
from eventbus.events.base import Event

AnyEvent = Union[
    leadership.LeaderElected,
    leadership.LeaderLost,
    leadership.LeaseWritten,
    membership.HostOnline,
    membership.HostOffline,
    work.WorkAdded,
    work.WorkAssigned,
    work.WorkStarted,
    work.WorkProgress,
    work.WorkCompleted,
    work.WorkAttemptFailed,
    work.WorkHandedBack,
    work.WorkFailed,
    work.WorkCancelled,
    work.WorkUnschedulable,
    work.WorkSchedulable,
    results.SelfplayComplete,
    results.TrainingStarted,
    results.TrainingComplete,
    results.EvaluationComplete,
    models.ModelPromoted,
    models.ModelRated,
    models.ModelDistributed,
    models.ModelDistributionComplete,
    models.ModelDistributionFailed,
    data.DataSyncPlanned,
    data.DataSyncComplete,
    config.ConfigChanged,
    quarantine.OutputsQuarantined,
    quarantine.QuarantineLifted,
]

EVENT_TYPES: dict[str, type[Event]] = {t.type_name(): t for t in get_args(AnyEvent)}
