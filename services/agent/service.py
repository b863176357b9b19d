"""The `agent` service: one per node, a heartbeat every interval with the node's resources, roles, jobs and health.

On a clean stop it sends a last beat flagged `leaving`, so the leader marks the node
offline at once ("left") instead of after the silence.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from config.hosts import load_hosts
from config.nodedirs import jobs_file_for, measured_disk
from config.sections.membership import MembershipSettings
from config.settings import RrConfig
from eventbus.errors import BusUnavailable
from eventbus.events import utcnow
from eventbus.heartbeats import Heartbeat, publish_heartbeat
from servicekit.jobsfile import read_running_jobs
from servicekit.runtime import ServiceContext
from services.agent.gpus import GpuSource
from services.agent.resources import sample_host

log = logging.getLogger(__name__)

LEAVING_FLUSH_S = 2.0


def software_version() -> str:
    """The installed rr version, "dev" from a source tree."""
    try:
        return version("rr")
    except PackageNotFoundError:
        return "dev"


def node_roles(config: RrConfig, node_id: str) -> list[str]:
    """This node's roles in the hosts file; [] without a hosts file or when the node is not listed (blocking)."""
    if config.hosts_file is None:
        return []
    entry = load_hosts(config.hosts_file).hosts.get(node_id)
    return entry.all_roles() if entry is not None else []


class BeatMaker:
    """Builds this agent's beats: numbered, measured, with what the node runs."""

    def __init__(self, ctx: ServiceContext, roles: list[str], gpus: GpuSource, jobs_file: Path) -> None:
        self._ctx = ctx
        self._settings: MembershipSettings = ctx.config.membership
        self._jobs_file = jobs_file  # written by this node's worker
        self._roles = roles
        self._gpus = gpus
        self._version = software_version()
        self._started = utcnow()
        self._seq = 0
        self._disk = measured_disk(self._settings.disk_path, os.environ, Path.home())

    async def next(self, *, leaving: bool = False) -> Heartbeat:
        """The next beat, measured now."""
        gpus = await self._gpus.current()
        resources = await asyncio.to_thread(sample_host, self._disk, gpus)
        jobs = await asyncio.to_thread(read_running_jobs, self._jobs_file)
        lag = self._ctx.loop_lag.statistics()
        self._seq += 1
        return Heartbeat(
            node=self._ctx.node_id, ts=utcnow(), seq=self._seq, interval_s=self._settings.heartbeat_interval_s,
            resources=resources, roles=self._roles, jobs=jobs, version=self._version,
            loop_lag_s=round(lag.last_s, 4), loop_lag_max_s=round(lag.max_s, 4), started=self._started, leaving=leaving,
        )


async def beat_until_stopped(ctx: ServiceContext, maker: BeatMaker) -> None:
    """Send a beat every interval on a fixed cadence until stopping; a late beat goes at once, then the cadence resumes."""
    interval = ctx.config.membership.heartbeat_interval_s
    due = time.monotonic()
    while True:
        try:
            await publish_heartbeat(ctx.bus, await maker.next())
        except BusUnavailable as exc:
            log.warning("agent: %s", exc)  # the next beat tries again; the leader waits several intervals
        due = max(due + interval, time.monotonic())
        if await ctx.wait_stopping(due - time.monotonic()):
            return


async def main(ctx: ServiceContext) -> None:
    """Beat until stopped, then say goodbye with a leaving beat."""
    settings = ctx.config.membership
    roles = await asyncio.to_thread(node_roles, ctx.config, ctx.node_id)
    await asyncio.to_thread(sample_host, measured_disk(settings.disk_path, os.environ, Path.home()), [])  # primes psutil's CPU counter for the first beat
    gpus = GpuSource(settings.gpu_probe)
    await gpus.start(settings.gpu_probe_timeout_s, ctx.stopping)
    maker = BeatMaker(ctx, roles, gpus, jobs_file_for(ctx.config, ctx.node_id, dict(os.environ), Path.home()))
    log.info("agent %s: heartbeat every %gs, roles %s", ctx.node_id, settings.heartbeat_interval_s, ",".join(roles) or "-")
    try:
        await beat_until_stopped(ctx, maker)
        await publish_heartbeat(ctx.bus, await maker.next(leaving=True), flush_timeout=LEAVING_FLUSH_S)
        log.info("agent %s: leaving beat sent", ctx.node_id)
    except BusUnavailable as exc:
        log.warning("agent %s: leaving beat not sent (the leader will notice the silence): %s", ctx.node_id, exc)
    finally:
        await gpus.close()
