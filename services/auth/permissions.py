"""Least-privilege NATS subject permissions per role, pure: who may publish and subscribe to what.

Roles:
  admin        everything (operators: `rr streams init`, `rr dlq`, upgrades).
  coordinator  a node that may campaign for leadership: writes the leases KV, publishes any
               event, manages JetStream, but never deletes a stream or purges the log.
  worker       any other node: publishes only its own events (rr.evt.*.*.*.<node>) and
               heartbeat, consumes through its own durable consumers, reads everything, and
               uses its own inbox prefix so that it cannot read other nodes' replies.

Every subject below was checked against nats-server 2.15 in tests/test_auth.py.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from eventbus.streams import DEADLETTER_STREAM, EVENTS_STREAM, TELEMETRY_STREAM
from eventbus.subjects import DEADLETTER_ROOT, EVENTS_ROOT, TELEMETRY_ROOT, heartbeat_subject, source_filter

Role = Literal["admin", "coordinator", "worker"]

# Durable consumers are named "<service>-<node>" (services/worker: "worker-<node>"); a node
# may create and pull from these names only, so it cannot take another node's assignments.
NODE_CONSUMER_SERVICES = ("worker", "agent", "distributor", "sync")

# Reads: stream and consumer info, direct gets, names. Nothing here changes state.
_READ_API = (
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.INFO.*.*",
    "$JS.API.CONSUMER.NAMES.*",
    "$JS.API.CONSUMER.LIST.*",
    # Ephemeral consumers (ordered reads: history, follow, object downloads). The server
    # refuses a durable name on this subject, so no node can take over another's durable.
    "$JS.API.CONSUMER.CREATE.*",
    "$JS.FC.>",  # flow-control replies of ordered push consumers
)


class SubjectRules(msgspec.Struct, frozen=True, kw_only=True):
    """Subjects allowed and denied for one direction; deny wins over allow."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """What one user may publish and subscribe to."""

    publish: SubjectRules
    subscribe: SubjectRules
    # One reply to each request the user received (micro discovery and status endpoints),
    # wherever the requester's inbox is; unsolicited publishes to inboxes stay denied.
    allow_responses: bool = False


class Buckets(msgspec.Struct, frozen=True, kw_only=True):
    """Names of the JetStream buckets the permissions refer to (from the rr config)."""

    leases: str = "rr_leases"
    objects: tuple[str, ...] = ("rr_models", "rr_data")  # model and data object stores


def inbox_prefix(node: str) -> str:
    """The inbox prefix a node's connections use: replies to it arrive under `<prefix>.>`."""
    return f"_INBOX_{node}"


def leases_subjects(buckets: Buckets) -> str:
    """The subjects that write the leadership KV."""
    return f"$KV.{buckets.leases}.>"


def protected_streams(buckets: Buckets) -> tuple[str, ...]:
    """Streams whose purge would erase evidence or leadership epochs."""
    return (EVENTS_STREAM, TELEMETRY_STREAM, DEADLETTER_STREAM, f"KV_{buckets.leases}")


def _denied_to_all_nodes(buckets: Buckets) -> tuple[str, ...]:
    return (
        "$JS.API.STREAM.DELETE.>",
        *(f"$JS.API.STREAM.PURGE.{s}" for s in protected_streams(buckets)),
        "_INBOX.>",  # nobody but admin answers into the shared inbox space
    )


def discovery_subjects(node: str) -> tuple[str, ...]:
    """What a service subscribes to so that `rr services` finds it: micro's $SRV.* and its own status endpoints."""
    return ("$SRV.>", f"rr.svc.*.{node}.>")


def own_consumer_subjects(node: str) -> tuple[str, ...]:
    """API and ack subjects of the node's own durable consumers, in every stream."""
    subjects: list[str] = []
    for service in NODE_CONSUMER_SERVICES:
        name = f"{service}-{node}"
        subjects += [
            f"$JS.API.CONSUMER.DURABLE.CREATE.*.{name}",
            f"$JS.API.CONSUMER.CREATE.*.{name}",
            f"$JS.API.CONSUMER.CREATE.*.{name}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.*.{name}",
            f"$JS.API.CONSUMER.DELETE.*.{name}",
            f"$JS.ACK.*.{name}.>",
            f"{DEADLETTER_ROOT}.*.{name}",
        ]
    return tuple(subjects)


def object_store_subjects(buckets: Buckets) -> tuple[str, ...]:
    """Creating and uploading to the object buckets; replacing or deleting an object purges its old chunks."""
    subjects: list[str] = []
    for bucket in buckets.objects:
        # Create only (never update or delete): every node's distributor and sync services
        # make their bucket at start if no one has yet; the server refuses a create that
        # differs from an existing stream.
        subjects += [f"$O.{bucket}.>", f"$JS.API.STREAM.PURGE.OBJ_{bucket}", f"$JS.API.STREAM.CREATE.OBJ_{bucket}"]
    return tuple(subjects)


def worker_permissions(node: str, buckets: Buckets = Buckets()) -> Permissions:
    """A node that does not campaign: its own events, heartbeat and consumers, reads, uploads."""
    publish = SubjectRules(
        allow=(
            source_filter(node),
            heartbeat_subject(node),
            *own_consumer_subjects(node),
            *_READ_API,
            *object_store_subjects(buckets),
        ),
        deny=(leases_subjects(buckets), *_denied_to_all_nodes(buckets)),
    )
    subscribe = SubjectRules(allow=(f"{inbox_prefix(node)}.>", *discovery_subjects(node)), deny=("_INBOX.>",))
    return Permissions(publish=publish, subscribe=subscribe, allow_responses=True)


def coordinator_permissions(node: str, buckets: Buckets = Buckets()) -> Permissions:
    """A leadership candidate: any event, the leases KV, JetStream management; no stream deletion or log purge."""
    publish = SubjectRules(
        allow=(
            f"{EVENTS_ROOT}.>",
            f"{TELEMETRY_ROOT}.>",
            f"{DEADLETTER_ROOT}.>",
            leases_subjects(buckets),
            "$JS.API.>",
            "$JS.ACK.>",
            "$JS.FC.>",
            "$O.>",
            "$SRV.>",  # `rr services` from a coordinator: discovery requests
            "rr.svc.>",  # ... and status requests to any node's services
        ),
        deny=_denied_to_all_nodes(buckets),
    )
    # The leader watches every node's heartbeats with a core subscription (rr.tel.hb.*).
    subscribe = SubjectRules(allow=(f"{inbox_prefix(node)}.>", "rr.>", *discovery_subjects(node)), deny=("_INBOX.>",))
    return Permissions(publish=publish, subscribe=subscribe, allow_responses=True)


def permissions_for(role: Role, node: str, buckets: Buckets = Buckets()) -> Permissions | None:
    """The role's permissions for `node`; None means unrestricted (admin)."""
    if role == "admin":
        return None
    if role == "coordinator":
        return coordinator_permissions(node, buckets)
    return worker_permissions(node, buckets)
