"""A stream's source as its leader reports it, and the one remedy a client has for a stalled one: a new stream leader.

When the server leading a sourced stream (KV_rr_leases) dies, the leader of the stream that sources it (RR_EVENTS)
re-creates its source consumer only on its own growing retry pause (10-46 s measured, ops/bench/README.md); a stream
leader that takes office sets its sources up at once. `step_down_leader` asks for that election
(`$JS.API.STREAM.LEADER.STEPDOWN.<stream>`); every publisher to the stream pauses for it, so callers ask only when
`source_status` shows the source stalled.
"""

from __future__ import annotations

import asyncio
import datetime

import msgspec
import nats.errors

from eventbus.connection import Bus
from eventbus.errors import BusError, BusUnavailable

NS_PER_S = 1e9


class SourceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One source of a stream as the stream's leader reports it."""

    idle_s: float | None  # since the leader last heard from the source (a copy or a heartbeat); None: not reported
    error: str | None  # the leader's last error setting the source up
    leader_tenure_s: float | None  # how long the stream's leader has held office; None: not reported, or one replica


class _StepDownReply(msgspec.Struct, frozen=True):
    success: bool = False
    error: dict[str, object] | None = None


def idle_seconds(active_ns: int | None, tenure_s: float | None) -> float | None:
    """Seconds since the stream's leader last heard from a source, from the `active` it reports; a leader that never
    heard from it reports -1 (a source it could not set up since it took office): silent for its whole tenure."""
    if active_ns is None:
        return None
    return active_ns / NS_PER_S if active_ns >= 0 else tenure_s


def step_down_subject(stream: str) -> str:
    """The API subject that asks a stream's leader to hand office to another replica."""
    return f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}"


async def source_status(bus: Bus, stream: str, source: str, *, timeout: float) -> SourceStatus | None:
    """`source` of `stream` now; None when the stream's leader did not answer (it may be mid-election) or has no such
    source."""
    try:
        info = await asyncio.wait_for(bus.js.stream_info(stream), timeout)
    except (TimeoutError, nats.errors.Error):  # JetStream's errors included
        return None
    found = next((s for s in info.sources or () if s.name == source), None)
    if found is None:
        return None
    # A stream of one replica has no one to hand office to: reported without a tenure, so no one asks.
    replicated = info.cluster is not None and bool(info.cluster.replicas)
    since = info.cluster.leader_since if info.cluster is not None and replicated else None
    tenure = (datetime.datetime.now(datetime.UTC) - since).total_seconds() if since is not None else None
    return SourceStatus(
        idle_s=idle_seconds(found.active, tenure),
        error=str(found.error.get("description", found.error)) if found.error else None,
        leader_tenure_s=tenure,
    )


async def step_down_leader(bus: Bus, stream: str, *, timeout: float) -> None:
    """Ask `stream`'s leader to hand office to another replica; BusUnavailable when the server did not answer, BusError
    when it refused (a single-replica stream, no permission)."""
    try:
        reply = await bus.nc.request(step_down_subject(stream), b"", timeout=timeout)
    except (TimeoutError, nats.errors.Error) as exc:
        raise BusUnavailable(f"stream {stream}'s leader did not answer the step-down request: {exc!r}") from None
    try:
        answer = msgspec.json.decode(reply.data, type=_StepDownReply)
    except msgspec.ValidationError as exc:
        raise BusError(f"stream {stream}'s step-down answer is unreadable: {exc}") from None
    if not answer.success:
        raise BusError(f"stream {stream}'s leader refused to step down: {answer.error}")
