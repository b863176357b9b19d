"""Streams declared in code and provisioned idempotently (`rr streams init`, `rr up`).

Retention estimate for the forensic log (RR_EVENTS) at the seeds' scale, 31 nodes:
each node finishes about one job every 10 minutes (4,464 jobs a day); a job's life is
about 12 events (added, assigned, started, ~6 progress, completed, its domain event, one
more) of ~450 bytes, plus promotions, distributions (31 per model), syncs and membership
flaps: about 60k events, 27 MB a day, ~10 GB a year. The defaults keep two years bounded
by 20 GiB, whichever comes first: two years at that rate, five months at 5x it. JetStream
reserves the bytes up front (about 24 GiB of streams, which `rr up` wants 32 GiB free for):
a larger bound would refuse a fresh install on a laptop; raise `streams.events_max_gib` on
servers with the disk for it.
Heartbeats (31 nodes every 5 s = 536k a day) would triple the log; they go to
RR_TELEMETRY, which keeps one hour and at most 120 beats per node.
"""

from __future__ import annotations

import logging
from typing import Literal

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamSource, SubjectTransform

from eventbus.errors import BusUnavailable, StreamSetupError, storage_full
from eventbus.events import MAX_EVENT_BYTES
from eventbus.leasecopy import transform
from eventbus.leases import DEFAULT_BUCKET, ensure_bucket
from eventbus.subjects import ALL_EVENTS, DEADLETTER_ROOT, EVENTS_ROOT, TELEMETRY_ROOT

log = logging.getLogger(__name__)

EVENTS_STREAM = "RR_EVENTS"
TELEMETRY_STREAM = "RR_TELEMETRY"
DEADLETTER_STREAM = "RR_DEADLETTER"
CONTEXT_STREAM = "RR_CONTEXT"
# What a work item's timeline shows around it (leadership, lease copies, membership): ~1.5% of
# the log, spread over all of it. RR_CONTEXT holds the server's copies of these alone, so that
# reading them mid-log does not make the server load every message block of RR_EVENTS.
CONTEXT_SUBJECTS = tuple(f"{EVENTS_ROOT}.{aggregate}.>" for aggregate in ("leader", "lease", "host"))

DAY = 86_400.0
GIB = 1 << 30
HEADERS_MAX = 8 * 1024  # room for a message's headers (id, fencing, trace, a parked message's reason)
HEARTBEAT_MAX_BYTES = 64 * 1024  # a heartbeat with every GPU and job listed is a few KiB
DLQ_BODY_MAX = 16 * 1024  # bytes of a poison message's body kept in its parked copy (the original stays)


class StreamSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the streams are stored; 1 replica on the embedded server, 3 on a cluster."""

    replicas: int = 1
    storage: Literal["file", "memory"] = "file"
    events_max_age_days: float = 730.0
    events_max_gib: float = 20.0
    duplicate_window_s: float = 120.0
    telemetry_max_age_s: float = 3600.0
    telemetry_per_node: int = 120
    telemetry_max_gib: float = 1.0
    deadletter_max_age_days: float = 90.0
    deadletter_max_gib: float = 1.0
    # RR_CONTEXT keeps RR_EVENTS' age in a tenth of its default bytes (its records are ~1.5% of the
    # log's): should it drop one RR_EVENTS still holds, a timeline reads that part from RR_EVENTS.
    context_max_gib: float = 2.0


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One stream as the code declares it."""

    name: str
    subjects: list[str]  # empty: the stream holds only what the server copies into it (`sources`)
    description: str
    max_age_s: float
    max_bytes: int
    max_msgs_per_subject: int = -1
    deny_delete: bool = False
    deny_purge: bool = False
    # The server refuses anything larger on publish, well under its 1 MiB max payload, so no
    # reader ever meets an oversized message and parking one always fits.
    max_msg_size: int = -1
    # Streams the server copies into this one: (stream, subject filter, destination subject); the
    # filters of one stream are one source, whose copies keep that stream's order.
    sources: tuple[tuple[str, str, str], ...] = ()


def declared_streams(settings: StreamSettings, lease_bucket: str = DEFAULT_BUCKET) -> list[StreamSpec]:
    """Every stream the cluster needs, sized by the settings; the log sources the lease bucket `lease_bucket`."""
    return [
        StreamSpec(
            name=EVENTS_STREAM,
            subjects=[ALL_EVENTS],
            description="rr forensic event log: every state change of the cluster",
            max_age_s=settings.events_max_age_days * DAY,
            max_bytes=int(settings.events_max_gib * GIB),
            max_msg_size=MAX_EVENT_BYTES + HEADERS_MAX,
            deny_delete=True,  # the log is evidence; nothing is removed one message at a time
            deny_purge=True,  # ... nor all at once, by anyone (the server refuses it, admin too)
            # The server copies every lease write into the log (eventbus/leasecopy.py): the fences
            # verify elections against these copies, which no client can publish. A bucket that
            # does not exist yet is fine: the server keeps trying the source.
            sources=((f"KV_{lease_bucket}", *transform(lease_bucket)),),
        ),
        StreamSpec(
            name=CONTEXT_STREAM,
            subjects=[],  # nothing publishes here: every record is the server's copy of one in RR_EVENTS
            description="rr leadership, lease copies and membership: the server's copies of RR_EVENTS' records",
            max_age_s=settings.events_max_age_days * DAY,
            max_bytes=int(settings.context_max_gib * GIB),
            max_msg_size=MAX_EVENT_BYTES + HEADERS_MAX,
            deny_delete=True,
            deny_purge=True,
            # Each copy's `Nats-Stream-Source` header names its sequence in RR_EVENTS (eventbus/contextread.py).
            sources=tuple((EVENTS_STREAM, subject, subject) for subject in CONTEXT_SUBJECTS),
        ),
        StreamSpec(
            name=TELEMETRY_STREAM,
            subjects=[f"{TELEMETRY_ROOT}.>"],
            description="rr heartbeats and telemetry, bounded",
            max_age_s=settings.telemetry_max_age_s,
            max_bytes=int(settings.telemetry_max_gib * GIB),
            max_msgs_per_subject=settings.telemetry_per_node,
            max_msg_size=HEARTBEAT_MAX_BYTES,
        ),
        StreamSpec(
            name=DEADLETTER_STREAM,
            subjects=[f"{DEADLETTER_ROOT}.>"],
            description="rr parked poison messages, with the reason in headers",
            max_age_s=settings.deadletter_max_age_days * DAY,
            max_bytes=int(settings.deadletter_max_gib * GIB),
            max_msg_size=DLQ_BODY_MAX + HEADERS_MAX,
        ),
    ]


def stream_config(spec: StreamSpec, settings: StreamSettings) -> StreamConfig:
    """The nats-py config of a declared stream."""
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=spec.subjects or None,  # as the server reports a stream with no subjects of its own
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=spec.max_age_s,
        max_bytes=spec.max_bytes,
        max_msgs_per_subject=spec.max_msgs_per_subject,
        max_msg_size=spec.max_msg_size,
        storage=StorageType.FILE if settings.storage == "file" else StorageType.MEMORY,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
        deny_delete=spec.deny_delete,
        deny_purge=spec.deny_purge,
        allow_direct=True,
        sources=[StreamSource(name=name, subject_transforms=[SubjectTransform(src=src, dest=dest)
                                                             for source, src, dest in spec.sources if source == name])
                 for name in dict.fromkeys(source for source, _, _ in spec.sources)] or None,
    )


def sources_of(config: StreamConfig) -> set[tuple[str, str, str]]:
    """The (stream, filter, destination) of each source of a stream config, as the server reports them."""
    return {(source.name, t.src or "", t.dest or "")
            for source in config.sources or () for t in source.subject_transforms or ()}


_COMPARED = (
    "storage",  # compared so that a change is refused below instead of reported "unchanged"
    "subjects",
    "max_age",
    "max_bytes",
    "max_msgs_per_subject",
    "max_msg_size",
    "num_replicas",
    "duplicate_window",
    "deny_delete",
    "deny_purge",
    "description",
)

# Limits an update may lower only when asked: a lower one drops the messages past it at once.
_RETENTION_LIMITS = ("max_age", "max_bytes", "max_msgs_per_subject", "max_msgs")


def _differs(current: StreamConfig, wanted: StreamConfig) -> list[str]:
    changed = [f for f in _COMPARED if getattr(current, f) != getattr(wanted, f)]
    # The server fills in fields of a source we never set: compare what a source does.
    return changed + (["sources"] if sources_of(current) != sources_of(wanted) else [])


def _limit(value: float | None) -> float:
    # 0, -1 and None all mean "no limit" in a stream config.
    return float("inf") if value is None or value <= 0 else float(value)


def shortened_limits(current: StreamConfig, wanted: StreamConfig) -> list[str]:
    """The retention limits `wanted` lowers ('max_age 730d -> 7d'), which would drop stored messages."""
    lowered = []
    for field in _RETENTION_LIMITS:
        old, new = _limit(getattr(current, field)), _limit(getattr(wanted, field))
        if new < old:
            lowered.append(f"{field} {getattr(current, field)} -> {getattr(wanted, field)}")
    return lowered


async def require_declared(js: JetStreamContext, settings: StreamSettings, *, where: str) -> None:
    """Raise BusUnavailable naming the first declared stream the server `where` does not have.

    RR_CONTEXT is not required: no service reads it, and the timeline reads RR_EVENTS without it.
    """
    for spec in declared_streams(settings):
        if spec.name == CONTEXT_STREAM:
            continue
        try:
            await js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            raise BusUnavailable(f"stream {spec.name} does not exist on {where}: run `rr streams init` (or `rr up`)") from None


async def provision(
    js: JetStreamContext, settings: StreamSettings, *, allow_shorter_retention: bool = False, lease_bucket: str = DEFAULT_BUCKET,
) -> dict[str, str]:
    """Create or update every declared stream; returns {stream: created|updated|unchanged}.

    An existing RR_EVENTS without the lease bucket's source gets it (`rr streams init` as admin).
    An update that lowers a retention limit is refused (StreamSetupError) unless
    `allow_shorter_retention`: it would drop the messages past the new limit for good.
    """
    outcome: dict[str, str] = {}
    bucket_error: StreamSetupError | None = None
    try:
        await ensure_bucket(js, lease_bucket, settings.replicas)  # before the log sources it (see ensure_bucket)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
        raise BusUnavailable(f"JetStream did not answer while provisioning lease bucket {lease_bucket}: {exc}") from None
    except nats.js.errors.APIError as exc:
        # Reported after the declared streams, whose own refusal names what to fix first.
        bucket_error = StreamSetupError(f"stream KV_{lease_bucket} (the lease bucket): {exc.description} "
                                        f"(err_code {exc.err_code})")
    for spec in declared_streams(settings, lease_bucket):
        wanted = stream_config(spec, settings)
        try:
            outcome[spec.name] = await _provision_one(js, wanted, allow_shorter_retention)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
            raise BusUnavailable(f"JetStream did not answer while provisioning {spec.name}: {exc}") from None
        except nats.js.errors.APIError as exc:
            if storage_full(exc.err_code, exc.description or ""):
                raise StreamSetupError(_no_room(spec, exc.description or "", exc.err_code)) from None
            raise StreamSetupError(f"stream {spec.name}: {exc.description} (err_code {exc.err_code})") from None
    if bucket_error is not None:
        raise bucket_error
    return outcome


SIZE_SETTINGS = {EVENTS_STREAM: "events_max_gib", TELEMETRY_STREAM: "telemetry_max_gib",
                 DEADLETTER_STREAM: "deadletter_max_gib", CONTEXT_STREAM: "context_max_gib"}


def _no_room(spec: StreamSpec, description: str, err_code: int | None) -> str:
    """What to do when JetStream cannot reserve a stream's size: free space, or ask for less."""
    return (f"stream {spec.name} needs {spec.max_bytes / GIB:.2f} GiB reserved but JetStream has no room "
            f"({description}, err_code {err_code}): free space where the server stores its data, or lower "
            f"streams.{SIZE_SETTINGS.get(spec.name, 'max_gib')} in the config")


async def _provision_one(js: JetStreamContext, wanted: StreamConfig, allow_shorter_retention: bool) -> str:
    assert wanted.name is not None
    try:
        info = await js.stream_info(wanted.name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(wanted)
        log.info("stream %s created", wanted.name)
        return "created"
    changed = _differs(info.config, wanted)
    if not changed:
        return "unchanged"
    if info.config.storage != wanted.storage:
        raise StreamSetupError(
            f"stream {wanted.name} exists with storage {info.config.storage} but config asks for "
            f"{wanted.storage}; storage cannot change in place (back up and recreate the stream)"
        )
    lowered = shortened_limits(info.config, wanted)
    if lowered and not allow_shorter_retention:
        raise StreamSetupError(
            f"stream {wanted.name}: the config lowers its retention ({'; '.join(lowered)}), which drops the "
            f"messages past it for good; keep the config's streams: limits, or run `rr streams init "
            "--allow-shorter-retention` with the admin credentials if that is meant"
        )
    await js.update_stream(wanted)
    log.info("stream %s updated: %s", wanted.name, ", ".join(changed))
    return "updated"
