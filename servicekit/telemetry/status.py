"""A running service's status as its `status` endpoint answers it, and the version it reports."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

import msgspec

from eventbus.connection import Bus
from eventbus.consumer import ConsumerStats
from eventbus.consumerlag import ConsumerLag, consumer_lag
from eventbus.publisher import PublisherStats
from servicekit.looplag import LoopLagStats
from servicekit.telemetry.observed import JobDurationStats, Observed

State = Literal["running", "stopping"]


class ConsumerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One durable consumer of the service: its counters and, when the server answered, its lag."""

    durable: str
    stream: str
    stats: ConsumerStats
    lag: ConsumerLag | None = None


class ServiceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What `rr services` shows of one running service instance."""

    service: str
    node: str
    version: str
    state: State
    pid: int
    started: dt.datetime
    uptime_s: float
    loop_lag: LoopLagStats
    published: PublisherStats
    consumers: list[ConsumerStatus] = []
    jobs: JobDurationStats | None = None
    telemetry: str = "none"  # the exporter in use


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """Who a service instance is: the parts of its status that never change."""

    service: str
    node: str
    version: str
    started: dt.datetime
    pid: int = 0
    telemetry: str = "none"


def rr_version() -> str:
    """The installed rr version; "0.0.0-dev" from a source tree."""
    try:
        return version("rr")
    except PackageNotFoundError:
        return "0.0.0-dev"


async def consumer_statuses(bus: Bus, observed: Observed) -> list[ConsumerStatus]:
    """Counters and server-side lag of every consumer the service exposes, asked for together."""
    lags = await asyncio.gather(*(consumer_lag(bus, c.spec.stream, c.spec.durable) for c in observed.consumers))
    return [
        ConsumerStatus(durable=c.spec.durable, stream=c.spec.stream, stats=c.statistics(), lag=lag)
        for c, lag in zip(observed.consumers, lags)
    ]


def service_status(identity: Identity, observed: Observed, consumers: list[ConsumerStatus],
                   *, stopping: bool, now: dt.datetime) -> ServiceStatus:
    """The status from the service's identity and what it exposes now."""
    jobs = observed.jobs.statistics()
    return ServiceStatus(
        service=identity.service, node=identity.node, version=identity.version,
        state="stopping" if stopping else "running", pid=identity.pid or os.getpid(),
        started=identity.started, uptime_s=round((now - identity.started).total_seconds(), 3),
        loop_lag=observed.loop_lag.statistics(), published=observed.publisher.statistics(),
        consumers=consumers, jobs=jobs if jobs.count else None, telemetry=identity.telemetry,
    )
