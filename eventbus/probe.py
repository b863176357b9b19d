"""Read-only and side-effect-free probes of a NATS deployment, for `rr doctor` and the permission tests.

A publish probe can be "harmless": it carries `Nats-Expected-Last-Sequence` set to a
sequence no stream reaches, so a permitted publish is answered by the stream with a
rejection and nothing is stored, while a forbidden one draws the server's permissions
violation. Permission violations reach nats-py's error callback only, so connections
used for probing pass a PermissionWatch as connect()'s `error_listener`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any, Literal

import msgspec
import nats.errors

from eventbus.connection import Bus
from eventbus.errors import BusUnavailable

# 2**63 - 1: far above any sequence a stream will reach, and accepted by the server as a number.
UNREACHABLE_SEQUENCE = str((1 << 63) - 1)
_NOT_FOUND = 10059  # JetStream "stream not found"


class PermissionWatch:
    """Collects the permission violations a connection reports, so a probe can tell "denied" from "no answer"."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._waiters: list[tuple[str, asyncio.Future[None]]] = []

    def on_error(self, exc: Exception) -> None:
        """connect(..., error_listener=watch.on_error)."""
        text = str(exc).lower()
        if "permissions violation" not in text:
            return
        self.violations.append(text)
        for subject, future in self._waiters:
            if _names(text, subject) and not future.done():
                future.set_result(None)

    def denied(self, subject: str) -> bool:
        """Whether a violation naming `subject` was reported."""
        return any(_names(v, subject) for v in self.violations)

    def waiter(self, subject: str) -> asyncio.Future[None]:
        """A future resolved when a violation naming `subject` arrives."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.denied(subject):
            future.set_result(None)
        self._waiters.append((subject, future))
        return future

    def forget(self, future: asyncio.Future[None]) -> None:
        """Stop tracking a waiter."""
        self._waiters = [(s, f) for s, f in self._waiters if f is not future]
        future.cancel()


def _names(violation: str, subject: str) -> bool:
    # nats-py lower-cases the server's text: 'permissions violation for publish to "$kv.x.y"'.
    return f'"{subject.lower()}"' in violation


PublishOutcome = Literal["stored", "rejected", "denied", "no_stream", "timeout"]


class PublishProbe(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to one JetStream publish: stored, rejected by the stream, denied by permissions, ..."""

    subject: str
    outcome: PublishOutcome
    detail: str = ""

    @property
    def permitted(self) -> bool:
        """The server let the publish through to a stream (stored or rejected by the stream)."""
        return self.outcome in ("stored", "rejected")


async def probe_publish(
    bus: Bus, watch: PermissionWatch, subject: str, data: bytes = b"{}", *, harmless: bool = True, timeout: float = 2.0
) -> PublishProbe:
    """Publish to `subject` as a JetStream request; with `harmless` the stream rejects it instead of storing it."""
    headers = {"Nats-Expected-Last-Sequence": UNREACHABLE_SEQUENCE} if harmless else None
    denied: asyncio.Future[Any] = watch.waiter(subject)
    request: asyncio.Future[Any] = asyncio.ensure_future(bus.nc.request(subject, data, timeout=timeout, headers=headers))
    try:
        await asyncio.wait([request, denied], timeout=timeout + 0.5, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.forget(denied)
        if not request.done():
            request.cancel()
    if watch.denied(subject):
        return PublishProbe(subject=subject, outcome="denied", detail="permissions violation")
    return _publish_outcome(subject, request)


def _publish_outcome(subject: str, request: asyncio.Future[Any]) -> PublishProbe:
    if request.cancelled():
        return PublishProbe(subject=subject, outcome="timeout", detail="no answer")
    exc = request.exception()
    if isinstance(exc, nats.errors.NoRespondersError):
        return PublishProbe(subject=subject, outcome="no_stream", detail="no stream captures this subject")
    if exc is not None:
        return PublishProbe(subject=subject, outcome="timeout", detail=str(exc) or type(exc).__name__)
    reply = json.loads(getattr(request.result(), "data", b"{}") or b"{}")
    error = reply.get("error") if isinstance(reply, dict) else None
    if error:
        return PublishProbe(subject=subject, outcome="rejected", detail=str(error.get("description", error)))
    return PublishProbe(subject=subject, outcome="stored", detail=f"stream {reply.get('stream')} seq {reply.get('seq')}")


async def probe_subscribe(bus: Bus, watch: PermissionWatch, subject: str, *, timeout: float = 2.0) -> bool:
    """Whether the server accepts a subscription to `subject` (it is removed again at once)."""
    sub = await bus.nc.subscribe(subject)
    try:
        # The server's -ERR for a refused SUB came after the PONG of the next flush in ~40%
        # of tries here (nats-server 2.15), never after the PONG of a second one.
        for _ in range(2):
            if watch.denied(subject):
                break
            await bus.nc.flush(timeout=timeout)  # type: ignore[arg-type]  # annotated int, takes float seconds
    except (TimeoutError, nats.errors.TimeoutError):
        raise BusUnavailable(f"NATS did not answer a flush within {timeout:g}s") from None
    finally:
        await sub.unsubscribe()
    return not watch.denied(subject)


class JetStreamProbe(msgspec.Struct, frozen=True, kw_only=True):
    """Whether JetStream answers for this account, and what it holds."""

    enabled: bool
    detail: str = ""
    streams: int = 0
    consumers: int = 0
    api_level: int = 0


async def probe_jetstream(bus: Bus, *, timeout: float = 3.0) -> JetStreamProbe:
    """Account info from `$JS.API.INFO`; `enabled` False with the server's reason when it has none."""
    try:
        reply = await bus.nc.request("$JS.API.INFO", b"", timeout=timeout)
    except nats.errors.NoRespondersError:
        return JetStreamProbe(enabled=False, detail="no JetStream responders: the server runs without JetStream")
    except (TimeoutError, nats.errors.TimeoutError):
        return JetStreamProbe(enabled=False, detail=f"no answer from the JetStream API within {timeout:g}s")
    info = json.loads(reply.data or b"{}")
    if "error" in info:
        return JetStreamProbe(enabled=False, detail=str(info["error"].get("description", info["error"])))
    return JetStreamProbe(
        enabled=True, streams=int(info.get("streams", 0)), consumers=int(info.get("consumers", 0)),
        api_level=int(info.get("api", {}).get("level", 0) or 0),
    )


class StreamProbe(msgspec.Struct, frozen=True, kw_only=True):
    """One stream as the server describes it; `server_time` is the server's clock when it answered."""

    name: str
    exists: bool
    replicas: int = 0
    messages: int = 0
    current_replicas: int = 0  # replicas that are current with the leader, the leader included
    server_time: dt.datetime | None = None
    round_trip_s: float = 0.0
    sent_at: dt.datetime | None = None  # local UTC clock when the request left
    sources: tuple[str, ...] = ()  # streams the server copies into this one (RR_EVENTS: the lease bucket)


async def probe_stream(bus: Bus, name: str, *, timeout: float = 3.0) -> StreamProbe:
    """`$JS.API.STREAM.INFO.<name>`: replicas, messages, and the server's clock from the reply's `ts`."""
    sent_at = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    try:
        reply = await bus.nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=timeout)
    except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise BusUnavailable(f"JetStream did not answer stream info of {name}: {exc or type(exc).__name__}") from None
    round_trip = time.monotonic() - started
    info = json.loads(reply.data or b"{}")
    error = info.get("error")
    if error and error.get("err_code") == _NOT_FOUND:
        return StreamProbe(name=name, exists=False)
    if error:
        raise BusUnavailable(f"stream info of {name}: {error.get('description', error)}")
    cluster = info.get("cluster") or {}
    current = 1 + sum(1 for r in cluster.get("replicas") or [] if r.get("current"))
    return StreamProbe(
        name=name, exists=True, replicas=int(info["config"].get("num_replicas", 1)),
        messages=int(info.get("state", {}).get("messages", 0)), current_replicas=current,
        server_time=parse_server_time(info.get("ts")), round_trip_s=round_trip, sent_at=sent_at,
        sources=tuple(str(source.get("name", "")) for source in info["config"].get("sources") or ()),
    )


def parse_server_time(text: object) -> dt.datetime | None:
    """nats-server's RFC 3339 time with nanoseconds ('2026-11-24T07:39:13.64138318Z') as an aware datetime."""
    if not isinstance(text, str) or not text:
        return None
    head, _, rest = text.rstrip("Z").partition(".")
    digits = "".join(c for c in rest if c.isdigit())[:6].ljust(6, "0")
    try:
        return dt.datetime.fromisoformat(f"{head}.{digits}+00:00")
    except ValueError:
        return None


def server_version(bus: Bus) -> str:
    """The version the connected server announced, e.g. '2.15.1'."""
    version = bus.nc.connected_server_version
    return f"{version.major}.{version.minor}.{version.patch}"
