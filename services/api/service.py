"""`rr-service api`: the seeds' HTTP status API (:8770) and the dashboard, served from live projections."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from config.hosts import load_hosts
from eventbus.authority import may_publish
from eventbus.connectivity import is_connected
from eventbus.errors import BusUnavailable
from eventbus.events import WorkAdded
from eventbus.publisher import Published
from services.admission import rules_for
from services.api.http import open_server, serve_until
from services.api.keeper import ProjectionKeeper
from services.api.leaderhealth import watch_loops_down
from services.api.routes import Api
from services.agent.resources import measured_disk
from services.api.settings import resolved_port
from services.auth.credentials import credentials_from_env
from services.runtime import ServiceContext

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
    """Free bytes on `path`'s filesystem, measured when asked (a statfs: cheap, from the HTTP threads)."""

    def free() -> int | None:
        try:
            return shutil.disk_usage(path).free
        except OSError:
            return None

    return free


def work_adder(
    ctx: ServiceContext, keeper: ProjectionKeeper, loop: asyncio.AbstractEventLoop, timeout_s: float
) -> Callable[[WorkAdded], Published]:
    """A blocking `add(event)` for HTTP threads: publishes on the loop and waits at most `timeout_s`."""

    async def publish_and_fold(event: WorkAdded) -> Published:
        published = await ctx.publisher.publish(event)
        # Read-your-writes: a GET right after the POST lists the new item.
        await keeper.wait_folded(published.seq, FOLDED_WAIT_S)
        return published

    def add(event: WorkAdded) -> Published:
        future = asyncio.run_coroutine_threadsafe(publish_and_fold(event), loop)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BusUnavailable(f"no acknowledgement from JetStream within {timeout_s:.0f}s") from None

    return add


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
    keeper = ProjectionKeeper(
        ctx.bus, snapshot_every=settings.snapshot_every_events, recent=settings.recent_events,
        snapshot_min_interval_s=settings.snapshot_min_interval_s,
    )
    api = Api(
        keeper, settings, node_id=ctx.node_id, started=time.monotonic(), lag=ctx.loop_lag.statistics,
        connected=lambda: is_connected(ctx.bus),
        add_work=work_adder(ctx, keeper, asyncio.get_running_loop(), settings.publish_timeout_s),
        static=await asyncio.to_thread(load_static), work_refusal=await work_refusal(),
        rules=rules_for(ctx.config, await asyncio.to_thread(load_hosts, ctx.config.hosts_file) if ctx.config.hosts_file else None),
        free_bytes=storage_free(measured_disk(settings.storage_path, os.environ, Path.home())),
    )
    server = await asyncio.to_thread(open_server, settings.host, port, api, settings.max_body_bytes, settings.max_connections)
    log.info("api: serving http://%s:%d/ (status API and dashboard)", settings.host, port)
    async with asyncio.TaskGroup() as tasks:
        keeping = tasks.create_task(keeper.run())
        serving = tasks.create_task(serve_until(server, ctx.stopping))
        health = tasks.create_task(watch_loops_down(ctx.bus, ctx.config.leadership.bucket, api.set_loops_down))
        await ctx.stopping.wait()
        await serving
        keeping.cancel()
        health.cancel()
