"""Least-privilege NATS subject permissions per role, pure: who may publish and subscribe to what.

Roles:
  admin        the operators (`rr streams init`, `rr dlq`, upgrades): every JetStream call,
               including the destructive ones; of the events, only those admin owns.
  coordinator  a node that may campaign for leadership: writes the leases KV and the API's
               work-ref entries KV, publishes the event types it owns under its own node,
               manages consumers and objects, asks RR_EVENTS' leader to step down (a stalled
               source of the leases), but
               never deletes or purges a stream, nor updates or deletes messages of the log,
               the dead letters or the leases.
  worker       any other node: publishes only the event types it owns under its own node
               (rr.evt.*.*.<TYPE>.<node>) and its heartbeat, consumes through its own
               durable consumers, reads everything, uploads objects (never deletes or purges),
               and uses its own inbox prefix so that it cannot read other nodes' replies.

Which role owns which event type is eventbus/authority.py's table.

Every subject below was checked against nats-server 2.15 in tests/test_auth.py.
"""

from __future__ import annotations

import msgspec

from eventbus.authority import Role, foreign_types, owned_types
from eventbus.leasecopy import COPIES
from eventbus.sourcestall import step_down_subject
from eventbus.streams import CONTEXT_STREAM, DEADLETTER_STREAM, EVENTS_STREAM, TELEMETRY_STREAM
from eventbus.subjects import DEADLETTER_ROOT, EVENTS_ROOT, TELEMETRY_ROOT, WORKREFS_BUCKET, heartbeat_subject, token

# Durable consumers are named "<service>-<node>" (services/worker: "worker-<node>" and
# "worker_cancels-<node>"); a node may create and pull from these names only, so it cannot take
# another node's assignments. No service name holds a "-": the first one ends it, so no node's
# name can be another node's (a "worker-cancels" would make node "x"'s and node "cancels-x"'s one).
NODE_CONSUMER_SERVICES = ("worker", "worker_cancels", "agent", "distributor", "sync")


def node_consumer(service: str, node: str) -> str:
    """The durable consumer name of one of a node's services (one of NODE_CONSUMER_SERVICES)."""
    if service not in NODE_CONSUMER_SERVICES:
        raise ValueError(f"{service!r} is not among the services with node consumers {NODE_CONSUMER_SERVICES}")
    return f"{service}-{token(node)}"

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
    """Streams only admin may update, purge or delete messages of: the log, its evidence, the epochs."""
    return (EVENTS_STREAM, CONTEXT_STREAM, TELEMETRY_STREAM, DEADLETTER_STREAM, f"KV_{buckets.leases}")


def event_subjects(role: Role, node: str) -> tuple[str, ...]:
    """The event subjects `node` may publish: each type its role owns, under its own name only."""
    return tuple(f"{EVENTS_ROOT}.*.*.{type_name}.{token(node)}" for type_name in owned_types(role))


# Calls that destroy data (or a whole account's streams) without naming one message: admin's only.
DESTRUCTIVE_API = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.ACCOUNT.PURGE.>",
    "$JS.API.STREAM.RESTORE.>",
)


def protected_stream_api(buckets: Buckets) -> tuple[str, ...]:
    """Updating a protected stream (a shorter retention erases it) or deleting its messages one by one."""
    return tuple(f"$JS.API.STREAM.{verb}.{stream}" for stream in protected_streams(buckets) for verb in ("UPDATE", "MSG.DELETE"))


# Only the server writes here (its copies of the lease writes): a copy is what the fences verify
# an election against, so no user, admin included, may publish one.
SERVER_ONLY_EVENTS = (COPIES,)


def _denied_to_all_nodes(buckets: Buckets) -> tuple[str, ...]:
    return (
        *SERVER_ONLY_EVENTS,
        *DESTRUCTIVE_API,
        *protected_stream_api(buckets),
        "_INBOX.>",  # nobody but admin answers into the shared inbox space
    )


def discovery_subjects(node: str) -> tuple[str, ...]:
    """What a service subscribes to so that `rr services` finds it: micro's $SRV.* and its own status endpoints."""
    return ("$SRV.>", f"rr.svc.*.{node}.>")


def own_consumer_subjects(node: str) -> tuple[str, ...]:
    """API and ack subjects of the node's own durable consumers, in every stream."""
    subjects: list[str] = []
    for service in NODE_CONSUMER_SERVICES:
        name = node_consumer(service, node)
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
    """Creating the object buckets and uploading to them; never purging or deleting in them."""
    subjects: list[str] = []
    for bucket in buckets.objects:
        # Create only (never update or delete): every node's distributor and sync services
        # make their bucket at start if no one has yet; the server refuses a create that
        # differs from an existing stream. A replaced object's old chunks stay until the
        # leader's store clean-up deletes them (eventbus/objects.py).
        subjects += [f"$O.{bucket}.>", f"$JS.API.STREAM.CREATE.OBJ_{bucket}"]
    return tuple(subjects)


def worker_permissions(node: str, buckets: Buckets = Buckets()) -> Permissions:
    """A node that does not campaign: its own reports, heartbeat and consumers, reads, uploads."""
    publish = SubjectRules(
        allow=(
            *event_subjects("worker", node),
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
    """A leadership candidate: its own reports and decisions, the leases KV, consumers and objects; nothing destructive."""
    publish = SubjectRules(
        allow=(
            *event_subjects("coordinator", node),
            f"{TELEMETRY_ROOT}.>",
            f"{DEADLETTER_ROOT}.>",
            leases_subjects(buckets),
            f"$KV.{WORKREFS_BUCKET}.>",  # the API's work-ref entries (a cache of the log: readers fall back without it)
            "$JS.API.>",
            # Within the line above; named so that narrowing it keeps what the elector needs: a lease holder whose
            # acquisition's copy is held up by a stalled source asks the log's leader to step down (sourcenudge.py).
            step_down_subject(EVENTS_STREAM),
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


def admin_permissions() -> Permissions:
    """The operators: anything, except publishing the event types admin does not own (nodes and leaders do)."""
    deny = (*SERVER_ONLY_EVENTS, *(f"{EVENTS_ROOT}.*.*.{type_name}.*" for type_name in foreign_types("admin")))
    return Permissions(publish=SubjectRules(allow=(">",), deny=deny), subscribe=SubjectRules())


def permissions_for(role: Role, node: str, buckets: Buckets = Buckets()) -> Permissions | None:
    """The role's permissions for `node` (None means unrestricted; no role is today)."""
    if role == "admin":
        return admin_permissions()
    if role == "coordinator":
        return coordinator_permissions(node, buckets)
    return worker_permissions(node, buckets)
