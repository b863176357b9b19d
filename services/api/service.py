"""`rr-service api`: the seeds' HTTP status API (:8770) and the dashboard, served from live projections."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cluster.leadership.election import load_candidates
from config.hosts import load_hosts
from config.nodedirs import jobs_file_for, measured_disk
from config.sections.api import UP_PID_ENV, resolved_port
from eventbus import tracing
from eventbus.authority import may_publish
from eventbus.connectivity import is_connected
from eventbus.consumerlag import ConsumerLag, stream_lags, stream_messages
from eventbus.errors import BusError, BusUnavailable
from eventbus.events import Event, WorkAdded
from eventbus.history import aggregate_events
from eventbus.leases import LeaseBucket, LeaseRecord
from eventbus.publisher import Published
from eventbus.streams import DEADLETTER_STREAM, EVENTS_STREAM
from servicekit.admission import rules_for
from servicekit.auth.credentials import credentials_from_env
from servicekit.runtime import ServiceContext
from services.api.app import build_app
from services.api.control import NodeControl
from services.api.keeper import ProjectionKeeper
from services.api.leaderhealth import watch_loops_down
from services.api.metrics import FleetMetrics
from services.api.routes import Api
from services.api.server import make_server, open_server, serve_until
from services.api.tokens import load_table

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# URL path -> (file, content type); nothing else under static/ is served.
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
FOLDED_WAIT_S = 2.0  # POST /work/add answers once its item is visible to GET /work/status, or after this


def load_static() -> dict[str, tuple[str, bytes]]:
    """The dashboard's files, read once at start."""
    return {path: (kind, (STATIC_DIR / name).read_bytes()) for path, (name, kind) in STATIC_FILES.items()}


def storage_free(path: str) -> Callable[[], int | None]:
    """Free bytes on `path`'s filesystem, measured when asked (a statfs: cheap enough for a request)."""

    def free() -> int | None:
        try:
            return shutil.disk_usage(path).free
        except OSError:
            return None

    return free


def work_adder(ctx: ServiceContext, keeper: ProjectionKeeper, timeout_s: float) -> Callable[[WorkAdded], Awaitable[Published]]:
    """`add(event)`: publish, then wait until it is folded, at most `timeout_s` for the ack."""

    async def add(event: WorkAdded) -> Published:
        try:
            with tracing.root("work add", {"rr.work_id": event.work_id, "rr.requested_by": event.requested_by}):
                published = await asyncio.wait_for(ctx.publisher.publish(event), timeout_s)
        except TimeoutError:
            raise BusUnavailable(f"no acknowledgement from JetStream within {timeout_s:.0f}s") from None
        # Read-your-writes: a GET right after the POST lists the new item.
        await keeper.wait_folded(published.seq, FOLDED_WAIT_S)
        return published

    return add


class BusNodeLink:
    """The work endpoints' reads and appends on the service's bus, each bounded by `timeout_s`."""

    def __init__(self, ctx: ServiceContext, keeper: ProjectionKeeper, timeout_s: float) -> None:
        self._ctx = ctx
        self._keeper = keeper
        self._timeout_s = timeout_s

    async def item_events(self, work_id: str) -> list[tuple[int, Event]]:
        """One work item's events in log order, read from the stream now."""
        try:
            return await asyncio.wait_for(aggregate_events(self._ctx.bus, "work", work_id), self._timeout_s)
        except TimeoutError:
            raise BusUnavailable(f"reading {work_id}'s events took over {self._timeout_s:.0f}s") from None

    async def append(self, event: Event, expect_last_seq: int) -> Published:
        """Append if the item's last event is still `expect_last_seq`; answers once folded (or soon after)."""
        try:
            published = await asyncio.wait_for(self._ctx.publisher.publish(event, expect_last_seq=expect_last_seq), self._timeout_s)
        except TimeoutError:
            raise BusUnavailable(f"no acknowledgement from JetStream within {self._timeout_s:.0f}s") from None
        await self._keeper.wait_folded(published.seq, FOLDED_WAIT_S)
        return published


class BucketKeys:
    """The leadership bucket's keys as /election/start and /lease/request read and release them."""

    def __init__(self, bucket: LeaseBucket, timeout_s: float) -> None:
        self._bucket = bucket
        self._timeout_s = timeout_s

    async def read(self, role: str) -> LeaseRecord:
        """The role's lease key now; absent while no candidate has made the bucket yet."""
        try:
            return await self._bucket.read(role, timeout=self._timeout_s)
        except BusUnavailable:
            raise
        except BusError:
            if await self._bucket.exists():
                raise
            return LeaseRecord(role=role, revision=0, state="absent")

    async def release(self, role: str, revision: int) -> None:
        """Delete the key if still at `revision`: the server refuses it otherwise (ConcurrencyConflict)."""
        await self._bucket.release(role, revision=revision, timeout=self._timeout_s)


async def lease_refusal() -> str | None:
    """Why this node's NATS credentials may not write the leadership leases (only coordinators may); None when they may."""
    creds = await asyncio.to_thread(credentials_from_env)
    if creds is None or creds.role == "coordinator":
        return None
    return (f"this API runs with the NATS credentials of {creds.user} (role {creds.role or 'unknown'}), which may not write "
            "the leadership leases; run the API on a coordinator")


def node_control(ctx: ServiceContext, candidates: tuple[str, ...], refusal: str | None) -> NodeControl:
    """What /election/start, /lease/request and /admin/shutdown|reset act on for this node."""
    pid = os.environ.get(UP_PID_ENV, "")
    worker_dir = ctx.dirs.worker_dir(ctx.node_id)
    return NodeControl(
        node_id=ctx.node_id, leases=BucketKeys(LeaseBucket(ctx.bus, ctx.config.leadership.bucket), ctx.config.api.publish_timeout_s),
        candidates=candidates, lease_refusal=refusal, up_pid=int(pid) if pid.isdigit() else None, worker_dir=worker_dir,
        jobs_file=jobs_file_for(ctx.config, ctx.node_id, os.environ, Path.home()),
    )


async def server_probe(ctx: ServiceContext) -> tuple[dict[str, ConsumerLag], int | None]:
    """What only the server knows, for /metrics: the event consumers' lag and the dead letters parked."""
    return await stream_lags(ctx.bus, EVENTS_STREAM), await stream_messages(ctx.bus, DEADLETTER_STREAM)


async def work_refusal() -> str | None:
    """Why this node's NATS credentials may not append WORK_ADDED (eventbus/authority.py); None when they may."""
    creds = await asyncio.to_thread(credentials_from_env)
    if creds is None or may_publish(creds.role, WorkAdded.type_name()):
        return None
    reason = (f"this API runs with the NATS credentials of {creds.user} (role {creds.role or 'unknown'}), which may not "
              "append WORK_ADDED (README: Who may publish what); run the API on a coordinator or with admin credentials")
    log.warning("api: POST /work/add answers 403: %s", reason)
    return reason


async def main(ctx: ServiceContext) -> None:
    """Keep the projections live and serve them over HTTP until stopped."""
    settings = ctx.config.api
    port = resolved_port(settings, dict(os.environ))
    metrics = FleetMetrics()
    candidates = await load_candidates(ctx.config)
    keeper = ProjectionKeeper(
        ctx.bus, snapshot_every=settings.snapshot_every_events, recent=settings.recent_events,
        snapshot_min_interval_s=settings.snapshot_min_interval_s, snapshot_max_gib=ctx.config.snapshots.max_gib,
        snapshot_config=ctx.config.snapshots, on_record=metrics.on_record, candidates=candidates,
    )
    api = Api(
        keeper, settings, node_id=ctx.node_id, started=time.monotonic(), lag=ctx.loop_lag.statistics,
        connected=lambda: is_connected(ctx.bus), add_work=work_adder(ctx, keeper, settings.publish_timeout_s),
        work_refusal=await work_refusal(), node_link=BusNodeLink(ctx, keeper, settings.publish_timeout_s),
        tokens=await asyncio.to_thread(load_table, settings.tokens_file) if settings.tokens_file else None,
        config=ctx.config, metrics=metrics,
        free_bytes=storage_free(measured_disk(settings.storage_path, os.environ, Path.home())),
        rules=rules_for(ctx.config, await asyncio.to_thread(load_hosts, ctx.config.hosts_file) if ctx.config.hosts_file else None),
        probe=lambda: server_probe(ctx),
        control=node_control(ctx, candidates, await lease_refusal()),
    )
    app = build_app(api, stopping=ctx.stopping, static=await asyncio.to_thread(load_static))
    sock = await asyncio.to_thread(open_server, settings.host, port)
    # Litestar is an ASGI app; its scope and message types are narrower than the alias uvicorn declares.
    server = make_server(app, max_connections=settings.max_connections)  # type: ignore[arg-type]
    log.info("api: serving http://%s:%d/ (status API and dashboard)", settings.host, port)
    async with asyncio.TaskGroup() as tasks:
        keeping = tasks.create_task(keeper.run())
        health = tasks.create_task(watch_loops_down(ctx.bus, ctx.config.leadership.bucket, api.set_loops_down))
        await serve_until(server, sock, ctx.stopping)
        keeping.cancel()
        health.cancel()
