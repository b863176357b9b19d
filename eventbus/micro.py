"""NATS micro services: announce a running service on `$SRV.PING|INFO|STATS`, and find the running ones.

The only module that imports `nats.micro`. A registered service answers `nats micro ls`
and `rr services`, and has one `status` endpoint whose reply the caller supplies.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
import nats.errors
import nats.micro
from nats.aio.msg import Msg
from nats.micro.request import Request
from nats.micro.service import Service, ServiceConfig

from eventbus.connection import Bus
from eventbus.errors import BusUnavailable
from eventbus.subjects import token

log = logging.getLogger(__name__)

CONTROL_PREFIX = "$SRV"
STATUS_ENDPOINT = "status"
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")

Verb = Literal["PING", "INFO", "STATS"]


class EndpointInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One endpoint of a service as INFO describes it."""

    name: str
    subject: str
    queue_group: str = ""
    metadata: dict[str, str] | None = None


class ServiceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A running service instance as its `$SRV.INFO` (or PING) reply describes it."""

    name: str
    id: str
    version: str
    description: str | None = None
    metadata: dict[str, str] | None = None
    endpoints: list[EndpointInfo] = []

    def endpoint_subject(self, name: str) -> str | None:
        """The subject of the endpoint called `name`, if the service has one."""
        return next((e.subject for e in self.endpoints if e.name == name), None)


_info_decoder = msgspec.json.Decoder(ServiceInfo)


def status_subject(name: str, node: str) -> str:
    """Where the status endpoint of service `name` on `node` listens."""
    return f"rr.svc.{token(name)}.{token(node)}.{STATUS_ENDPOINT}"


def semantic_version(version: str) -> str:
    """`version` when it is semver (micro requires it), else it as build metadata of 0.0.0."""
    if _SEMVER.match(version):
        return version
    return "0.0.0+" + (re.sub(r"[^0-9A-Za-z.-]", "-", version) or "unknown")


class Registration:
    """A service announced on the bus; `stop()` withdraws it."""

    def __init__(self, service: Service) -> None:
        self._service = service

    @property
    def id(self) -> str:
        """The instance id the micro protocol gave this service."""
        return self._service.id

    async def stop(self) -> None:
        """Stop answering discovery and status requests."""
        try:
            await asyncio.wait_for(self._service.stop(), timeout=5)
        except (TimeoutError, nats.errors.Error) as exc:
            log.info("micro: withdrawing %s: %s", self._service.id, exc or type(exc).__name__)


async def register(
    bus: Bus,
    *,
    name: str,
    version: str,
    description: str,
    metadata: dict[str, str],
    status_subject: str,
    status: Callable[[], Awaitable[bytes]],
) -> Registration:
    """Announce a service with a `status` endpoint on `status_subject` answering `await status()`.

    The name may hold only letters, digits, '-' and '_' (others become '_'); a version that is
    not semver is carried as build metadata of 0.0.0.
    """

    async def answer_status(request: Request) -> None:
        await request.respond(await status())

    config = ServiceConfig(name=re.sub(r"[^A-Za-z0-9_-]", "_", name), version=semantic_version(version), description=description, metadata=metadata)
    try:
        service = await asyncio.wait_for(nats.micro.add_service(bus.nc, config), timeout=5)
        await service.add_endpoint(name=STATUS_ENDPOINT, subject=status_subject, handler=answer_status)
    except (TimeoutError, nats.errors.Error) as exc:
        raise BusUnavailable(f"could not register service {name} on the bus: {exc or type(exc).__name__}") from None
    return Registration(service)


async def discover(bus: Bus, *, verb: Verb = "INFO", name: str | None = None,
                   timeout: float = 2.0, quiet: float = 0.3) -> list[ServiceInfo]:
    """Every running service that answers `$SRV.<verb>[.<name>]`: replies are gathered until none came for `quiet` s."""
    subject = f"{CONTROL_PREFIX}.{verb}" + (f".{name}" if name else "")
    return [_info_decoder.decode(data) for data in await gather_replies(bus, subject, timeout=timeout, quiet=quiet)]


async def gather_replies(bus: Bus, subject: str, *, timeout: float, quiet: float) -> list[bytes]:
    """Bodies of all replies to one request sent to many responders (scatter-gather)."""
    arrived: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def on_reply(msg: Msg) -> None:
        # A status reply (503) means nobody listens at all: stop gathering at once.
        arrived.put_nowait(None if msg.headers and msg.headers.get("Status") else msg.data)

    inbox = bus.nc.new_inbox()
    sub = await bus.nc.subscribe(inbox, cb=on_reply)
    try:
        await bus.nc.publish(subject, b"", reply=inbox)
        return await _until_quiet(arrived, timeout=timeout, quiet=quiet)
    finally:
        await sub.unsubscribe()


async def _until_quiet(arrived: asyncio.Queue[bytes | None], *, timeout: float, quiet: float) -> list[bytes]:
    # The first reply may take a while (a busy service); after it, a pause of `quiet` ends the gathering.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    replies: list[bytes] = []
    while (left := deadline - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(arrived.get(), min(quiet if replies else timeout, left))
        except TimeoutError:
            break
        if data is None:
            break
        replies.append(data)
    return replies


async def request(bus: Bus, subject: str, *, timeout: float = 2.0) -> bytes | None:
    """One endpoint's reply, or None when nobody answered in time."""
    try:
        msg = await bus.nc.request(subject, b"", timeout=timeout)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return None
    if msg.headers and msg.headers.get("Nats-Service-Error"):
        return None
    return msg.data
