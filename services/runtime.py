"""Running one service: connect, check the streams, run its loops, stop cleanly on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import msgspec
import nats.js.errors

from config.settings import RrConfig, load_config
from eventbus.connection import DEFAULT_URL, Bus, connect
from eventbus.errors import BusUnavailable
from eventbus.publisher import Publisher
from eventbus.streams import declared_streams
from services.auth.credentials import check_identity, connect_options, credentials_from_env
from services.looplag import LoopLagMonitor
from services.options import CommonOptions
from services.telemetry.lifecycle import observability
from services.telemetry.observed import Observed

log = logging.getLogger(__name__)


class ServiceContext:
    """What a service's main function gets: its connection, publisher, config and stop signal."""

    def __init__(self, name: str, bus: Bus, config: RrConfig, options: CommonOptions) -> None:
        self.name = name
        self.bus = bus
        self.publisher = Publisher(bus)
        self.config = config
        self.options = options
        self.node_id = options.node_id
        self.loop_lag = LoopLagMonitor(name=name)
        self.stopping = asyncio.Event()
        self.observed = Observed(self.loop_lag, self.publisher)  # what status and metrics read; add consumers with ctx.observed.consumer(c)

    async def wait_stopping(self, timeout: float | None = None) -> bool:
        """Sleep until a stop is asked for, or `timeout` passes; True when stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout)
        return self.stopping.is_set()


ServiceMain = Callable[[ServiceContext], Awaitable[None]]


class ServiceEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A service `rr-service <name>` can run; imported lazily so one service's dependencies never stop another."""

    name: str
    target: str  # "package.module:function" taking a ServiceContext
    description: str
    on_up: bool = True  # started by `rr up` on a one-node cluster
    # "package.module:function" (config, env, home) -> the data dir it writes under; "" when it writes none.
    # rr-service holds that dir's lock for the service's lifetime (services/up/lock.py).
    data_dir: str = ""

    def load(self) -> ServiceMain:
        """Import and return the service's main function."""
        module, _, attr = self.target.partition(":")
        main: ServiceMain = getattr(importlib.import_module(module), attr)
        return main

    def data_dir_of(self, config: RrConfig, env: Mapping[str, str], home: Path) -> Path | None:
        """The data dir this service writes under, None when it writes none."""
        if not self.data_dir:
            return None
        module, _, attr = self.data_dir.partition(":")
        resolve: Callable[[RrConfig, Mapping[str, str], Path], Path] = getattr(importlib.import_module(module), attr)
        return resolve(config, env, home)


SERVICES: dict[str, ServiceEntry] = {}


def register(entry: ServiceEntry) -> None:
    """Add a service to the registry (services/registry.py declares them all)."""
    SERVICES[entry.name] = entry


async def require_streams(bus: Bus) -> None:
    """Fail with a clear message if the streams were never provisioned."""
    for spec in declared_streams(RrConfig().streams):
        try:
            await bus.js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            raise BusUnavailable(
                f"stream {spec.name} does not exist on {bus.connected_url}: run `rr streams init` (or `rr up`)"
            ) from None


async def run_service(entry: ServiceEntry, options: CommonOptions, *, grace_s: float = 10.0) -> None:
    """Run one service until SIGINT/SIGTERM; raises BusError/InvalidConfig with a one-line reason."""
    config = load_config(options.config_path)
    main = entry.load()
    # $RR_NATS_CREDS names this node's credentials file (`rr auth gen`); unset: no authentication.
    credentials = credentials_from_env()
    check_identity(credentials, options.node_id)
    auth = connect_options(credentials)
    bus = await connect(options.nats_url or DEFAULT_URL, node_id=options.node_id, name=f"rr-{entry.name}:{options.node_id}", **auth)
    try:
        await require_streams(bus)
        ctx = ServiceContext(entry.name, bus, config, options)
        _on_signals(ctx.stopping.set)
        log.info("service %s started on node %s via %s", entry.name, options.node_id, bus.connected_url)
        async with observability(ctx):  # telemetry from config.telemetry; announced on $SRV.* with a status endpoint
            await _supervise(ctx, main, grace_s)
    finally:
        await bus.close()


async def _supervise(ctx: ServiceContext, main: ServiceMain, grace_s: float) -> None:
    # A task group wraps a failing service's error in an ExceptionGroup; unwrapped, a
    # BusError reaches rr-service's one-line report instead of a traceback.
    try:
        await _run_until_stopped(ctx, main, grace_s)
    except ExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def _run_until_stopped(ctx: ServiceContext, main: ServiceMain, grace_s: float) -> None:
    # The main function is expected to return soon after ctx.stopping is set; past the
    # grace period it is cancelled.
    async with asyncio.TaskGroup() as tasks:
        lag = tasks.create_task(ctx.loop_lag.run())
        work = tasks.create_task(main(ctx))
        stop = tasks.create_task(ctx.stopping.wait())
        await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            done, _ = await asyncio.wait([work], timeout=grace_s)
            if not done:
                log.warning("service %s did not stop within %.0fs; cancelling", ctx.name, grace_s)
                work.cancel()
        stop.cancel()
        lag.cancel()


def _on_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, callback)
