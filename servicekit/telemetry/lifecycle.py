"""Around a running service: telemetry from its config, and its micro registration with a status endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec

from eventbus import micro
from eventbus.errors import BusUnavailable
from eventbus.events import utcnow
from servicekit.telemetry.permits import node_may_announce
from servicekit.telemetry.providers import Telemetry, start_telemetry
from servicekit.telemetry.status import Identity, consumer_statuses, rr_version, service_status

if TYPE_CHECKING:
    from servicekit.runtime import ServiceContext

log = logging.getLogger(__name__)

MICRO_PREFIX = "rr-"  # micro service names are rr-<service>, apart from anything else on the same NATS


@contextlib.asynccontextmanager
async def observability(ctx: ServiceContext) -> AsyncIterator[Telemetry]:
    """Telemetry per `ctx.config.telemetry` and the service announced on `$SRV.*`, for as long as the block runs."""
    identity = Identity(service=ctx.name, node=ctx.node_id, version=rr_version(), started=utcnow(),
                        pid=os.getpid(), telemetry=ctx.config.telemetry.exporter)
    telemetry = start_telemetry(ctx.config.telemetry, service=ctx.name, node=ctx.node_id, version=identity.version)
    try:
        telemetry.activate()
        meter = telemetry.meter()
        if meter is not None:
            from servicekit.telemetry.metrics import ServerLagSampler, install_instruments  # the OTel API, only when on

            install_instruments(meter, ctx.observed, ServerLagSampler(ctx.bus, asyncio.get_running_loop()).sample)
        registration = await _announce(ctx, identity)
        try:
            yield telemetry
        finally:
            if registration is not None:
                await registration.stop()
    finally:
        await telemetry.shutdown()


async def _announce(ctx: ServiceContext, identity: Identity) -> micro.Registration | None:
    # Discovery is for operators: a service that cannot be announced still does its work.
    subject = micro.status_subject(ctx.name, ctx.node_id)
    permitted, role = await node_may_announce(ctx.node_id, subject)
    if not permitted:
        log.info("service %s not announced for discovery: %s credentials may not subscribe to $SRV.> and %s",
                 ctx.name, role, subject)
        return None

    async def status() -> bytes:
        consumers = await consumer_statuses(ctx.bus, ctx.observed)
        now = service_status(identity, ctx.observed, consumers, stopping=ctx.stopping.is_set(), now=utcnow())
        return msgspec.json.encode(now)

    try:
        return await micro.register(
            ctx.bus,
            name=MICRO_PREFIX + ctx.name,
            version=identity.version,
            description=f"rr {ctx.name} service on {ctx.node_id}",
            metadata={"node": ctx.node_id, "service": ctx.name, "host": socket.gethostname(), "pid": str(identity.pid)},
            status_subject=subject,
            status=status,
        )
    except BusUnavailable as exc:
        log.warning("service %s not announced for discovery: %s", ctx.name, exc)
        return None
