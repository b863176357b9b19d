"""Who may publish each event type: one table, plain data, read by `rr auth gen` and by anyone checking a writer.

Subjects are rr.evt.<aggregate>.<id>.<TYPE>.<source>, so the server enforces this table: a
node's user may publish `rr.evt.*.*.<TYPE>.<node>` only for the types its role owns here
(servicekit/auth/permissions.py), and the admin user is denied every type admin does not own.

Roles (cli/auth/accounts.py decides each host's):
  worker       any node: the reports about its own jobs, installs and syncs.
  coordinator  a node that may campaign for leadership: everything a worker owns (it runs the
               same per-node services) plus the leader's decisions.
  admin        the operators: work requests, cancellations and config records.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from eventbus.events import EVENT_TYPES

Role = Literal["admin", "coordinator", "worker"]
ROLES: tuple[Role, ...] = ("worker", "coordinator", "admin")

_NODE: frozenset[Role] = frozenset({"worker", "coordinator"})  # a node's report about its own work
_LEADER: frozenset[Role] = frozenset({"coordinator"})  # a decision of the leader of a singleton role


class Grant(msgspec.Struct, frozen=True):
    """The roles that may publish one event type, and who publishes it in the code (for the README)."""

    roles: frozenset[Role]
    publisher: str


AUTHORITY: dict[str, Grant] = {
    "LEADER_ELECTED": Grant(_LEADER, "a candidate that won a lease"),
    "LEADER_LOST": Grant(_LEADER, "a leader stepping down"),
    # Nobody: the server copies each lease write into the log (a stream source, eventbus/leasecopy.py).
    "LEASE_WRITTEN": Grant(frozenset(), "nats-server itself: its copy of a lease write, which no user may publish"),
    "HOST_ONLINE": Grant(_LEADER, "the scheduler leader's membership loop"),
    "HOST_OFFLINE": Grant(_LEADER, "the scheduler leader's membership loop"),
    # The leader's populator and pipeline queue work too; `rr work add` and POST /work/add
    # run with admin credentials or on a coordinator (the API service).
    "WORK_ADDED": Grant(frozenset({"coordinator", "admin"}), "operators, the API, the leader's populator and pipeline"),
    "WORK_ASSIGNED": Grant(_LEADER, "the scheduler leader"),
    "WORK_STARTED": Grant(_NODE, "the worker running the attempt"),
    "WORK_PROGRESS": Grant(_NODE, "the worker running the attempt"),
    "WORK_COMPLETED": Grant(_NODE, "the worker running the attempt"),
    # Workers report their own failed attempts; the leader fails attempts that stalled or lost their node.
    "WORK_ATTEMPT_FAILED": Grant(_NODE, "the worker running the attempt, or the scheduler leader"),
    # A stopping worker hands its attempts back; the leader does for a node that went offline.
    "WORK_HANDED_BACK": Grant(_NODE, "the worker stopping, or the scheduler leader for a node gone offline"),
    "WORK_FAILED": Grant(_LEADER, "the scheduler leader, after max_attempts"),
    "WORK_CANCELLED": Grant(frozenset({"admin"}), "operators (`rr work cancel`)"),
    "WORK_UNSCHEDULABLE": Grant(_LEADER, "the scheduler leader, for a pending item no alive node can run"),
    "WORK_SCHEDULABLE": Grant(_LEADER, "the scheduler leader, when a node that can run it is alive again"),
    "SELFPLAY_COMPLETE": Grant(_NODE, "the worker that ran the selfplay job"),
    "TRAINING_STARTED": Grant(_NODE, "the worker that runs the training job"),
    "TRAINING_COMPLETE": Grant(_NODE, "the worker that ran the training job"),
    "EVALUATION_COMPLETE": Grant(_NODE, "the worker that ran the evaluation job"),
    "MODEL_PROMOTED": Grant(_LEADER, "the scheduler leader's pipeline"),
    # The pipeline rates the anchors and each candidate; a worker's tournament job re-rates players.
    "MODEL_RATED": Grant(_NODE, "the scheduler leader's pipeline, or the worker that ran a tournament"),
    "MODEL_DISTRIBUTED": Grant(_NODE, "the distributor of the node that installed it"),
    "MODEL_DISTRIBUTION_COMPLETE": Grant(_LEADER, "the scheduler leader's distribution loop"),
    "MODEL_DISTRIBUTION_FAILED": Grant(_NODE, "the distributor of the node that failed"),
    "DATA_SYNC_PLANNED": Grant(_LEADER, "the scheduler leader's sync planner"),
    "DATA_SYNC_COMPLETE": Grant(_NODE, "the sync service of the sending or receiving node"),
    "CONFIG_CHANGED": Grant(frozenset({"coordinator", "admin"}), "the leader's config watch, or operators"),
    "OUTPUTS_QUARANTINED": Grant(frozenset({"admin"}), "operators (`rr quarantine node`, `batch` or `model`)"),
    "QUARANTINE_LIFTED": Grant(frozenset({"admin"}), "operators (`rr quarantine lift`)"),
}


def server_written(type_name: str) -> bool:
    """Whether only the server writes events of this type (no role owns it): no client ever publishes one."""
    grant = AUTHORITY.get(type_name)
    return grant is not None and not grant.roles


def may_publish(role: str, type_name: str) -> bool:
    """Whether a user of `role` may publish events of `type_name` (unknown types: nobody)."""
    grant = AUTHORITY.get(type_name)
    return grant is not None and role in grant.roles


def owned_types(role: Role) -> tuple[str, ...]:
    """The event types `role` may publish, in catalog order."""
    return tuple(t for t in EVENT_TYPES if may_publish(role, t))


def foreign_types(role: Role) -> tuple[str, ...]:
    """The event types `role` may not publish, in catalog order."""
    return tuple(t for t in EVENT_TYPES if not may_publish(role, t))


def authority_table() -> str:
    """The table as Markdown, one row per event type (the README prints it; a test keeps them equal)."""
    rows = ["| event type | " + " | ".join(ROLES) + " | published by |", "| --- |" + " :-: |" * len(ROLES) + " --- |"]
    for type_name in EVENT_TYPES:
        grant = AUTHORITY[type_name]
        marks = " | ".join("yes" if role in grant.roles else "" for role in ROLES)
        rows.append(f"| `{type_name}` | {marks} | {grant.publisher} |")
    return "\n".join(rows)
