"""Running one service: connect, check the streams, run its loops, stop cleanly on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import msgspec

from config.nodedirs import NodeDirs, node_dirs
from config.settings import RrConfig, load_config
from eventbus.connection import DEFAULT_URL, Bus, connect
from eventbus.errors import BusUnavailable
from eventbus.publisher import Publisher
from eventbus.streams import require_declared
from eventbus.tasks import stop_tasks
from servicekit.auth.credentials import CREDENTIALS_ENV, check_identity, connect_options, credentials_from_env, load_credentials
from servicekit.looplag import LoopLagMonitor, install_block_hook
from servicekit.options import CommonOptions
from servicekit.telemetry.lifecycle import observability
from servicekit.telemetry.observed import Observed

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

    @functools.cached_property
    def dirs(self) -> NodeDirs:
        """This node's directories (config/nodedirs.py), resolved once from the config and the environment.

        On first use, not at start: InvalidConfig (two models dirs that differ) stops only the services that need them.
        """
        return node_dirs(self.config, os.environ, Path.home())

    async def wait_stopping(self, timeout: float | None = None) -> bool:
        """Sleep until a stop is asked for, or `timeout` passes; True when stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout)
        return self.stopping.is_set()


ServiceMain = Callable[[ServiceContext], Coroutine[Any, Any, None]]


class ServiceEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A service `rr-service <name>` can run; imported lazily so one service's dependencies never stop another."""

    name: str
    target: str  # "package.module:function" taking a ServiceContext
    description: str
    on_up: bool = True  # started by `rr up` on a one-node cluster
    # "package.module:function" (config, env, home) -> the data dir it writes under; "" when it writes none.
    # rr-service holds that dir's lock for the service's lifetime (cli/up/lock.py).
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
# An old service name -> its name now; systemd units and runbooks in the field still start the old one.
RENAMED: dict[str, str] = {}


def register(entry: ServiceEntry, *, formerly: tuple[str, ...] = ()) -> None:
    """Add a service to the registry (servicekit/registry.py declares them all), still runnable by its former names."""
    SERVICES[entry.name] = entry
    RENAMED.update({old: entry.name for old in formerly})


def service_named(name: str) -> ServiceEntry | None:
    """The registered service `rr-service <name>` runs, by its name or a former one; None if there is none."""
    return SERVICES.get(RENAMED.get(name, name))


async def require_streams(bus: Bus) -> None:
    """Fail with a clear message if the streams were never provisioned."""
    await require_declared(bus.js, RrConfig().streams, where=str(bus.connected_url))


async def run_service(entry: ServiceEntry, options: CommonOptions, *, grace_s: float = 10.0) -> None:
    """Run one service until SIGINT/SIGTERM; raises BusError/InvalidConfig with a one-line reason."""
    config = load_config(options.config_path)
    main = entry.load()
    # $RR_NATS_CREDS names this node's credentials file (`rr auth gen`); unset: no authentication.
    credentials = credentials_from_env()
    check_identity(credentials, options.node_id)
    auth = connect_options(credentials)
    bus = await connect(options.nats_url or DEFAULT_URL, node_id=options.node_id, name=f"rr-{entry.name}:{options.node_id}",
                        refresh_credentials=_credentials_reader() if credentials is not None else None,
                        auth_retry_s=config.nats_auth_retry_s, **auth)
    try:
        await require_streams(bus)
        ctx = ServiceContext(entry.name, bus, config, options)
        _on_signals(ctx.stopping.set)
        install_block_hook()  # opt-in ($RR_DEBUG_BLOCK_LOOP_S), for tests only
        log.info("service %s started on node %s via %s", entry.name, options.node_id, bus.connected_url)
        async with observability(ctx):  # telemetry from config.telemetry; announced on $SRV.* with a status endpoint
            await _supervise(ctx, main, grace_s)
    finally:
        await bus.close(timeout=2.0)  # a stop during a bus fault must not spend the grace on a drain


LEFTOVER_STOP_S = 3.0


async def run_service_process(entry: ServiceEntry, options: CommonOptions, *, grace_s: float = 10.0) -> None:
    """run_service as a process's whole event loop: what it leaves running is ended before asyncio.run sees it."""
    try:
        await run_service(entry, options, grace_s=grace_s)
    finally:
        # asyncio.run cancels what is left once, then waits for it forever; a task that lost that
        # one cancel (a leader loop inside a wait_for, seen under load) kept a stopped service
        # alive. Here they are cancelled until they end; one that never does ends the process.
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if await stop_tasks(leftover, LEFTOVER_STOP_S):
            _exit_now(f"rr-service {entry.name}: a task ignored cancellation for {LEFTOVER_STOP_S:.0f}s after the "
                      "service ended; exiting")


def _credentials_reader() -> Callable[[], Awaitable[str | None]]:
    # Re-read at every reconnect: a rotation (`rr auth gen --rotate`) rewrites the file, and the
    # running service picks the new password up without a restart.
    path = os.environ[CREDENTIALS_ENV]

    async def read() -> str | None:
        creds = await asyncio.to_thread(load_credentials, path)
        return creds.nkey_seed or None

    return read


async def _supervise(ctx: ServiceContext, main: ServiceMain, grace_s: float) -> None:
    # A task group wraps a failing service's error in an ExceptionGroup; unwrapped, a
    # BusError reaches rr-service's one-line report instead of a traceback.
    try:
        await _run_until_stopped(ctx, main, grace_s)
    except ExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


CANCEL_SHARE = 0.2  # of the grace period, kept for cancelling a main function that did not return in time


async def _run_until_stopped(ctx: ServiceContext, main: ServiceMain, grace_s: float) -> None:
    # The main function is expected to return soon after ctx.stopping is set; past most of the
    # grace period it is cancelled, and a main that ignores even that ends the process: a
    # service that cannot stop must not linger (its supervisor restarts it).
    lag = asyncio.create_task(ctx.loop_lag.run())
    work = asyncio.create_task(main(ctx), name=f"service:{ctx.name}")
    stop = asyncio.create_task(ctx.stopping.wait())
    lost = asyncio.create_task(ctx.bus.closed_for_good.wait())
    try:
        await asyncio.wait([work, stop, lost], return_when=asyncio.FIRST_COMPLETED)
        if lost.done() and not ctx.bus.closing:
            log.error("service %s: NATS connection closed for good (%s); stopping", ctx.name, ctx.bus.last_error)
            ctx.stopping.set()
        if not work.done():
            await _stop_within(ctx, work, grace_s)
        if lost.done() and not ctx.bus.closing:
            raise BusUnavailable(f"NATS connection closed for good ({ctx.bus.last_error}): exiting so the service manager "
                                 "restarts this service with its current credentials")
        if work.cancelled() and not ctx.stopping.is_set():
            # Nobody asked it to stop: a call it awaited was cancelled under it. Exiting non-zero
            # gets it restarted; returning 0 would look like a clean stop.
            raise BusUnavailable(f"service {ctx.name} ended by a cancelled call (a lost connection?); exiting to be restarted")
        if not work.cancelled():  # cancelled past its grace: logged above, a stop all the same
            work.result()
    finally:
        for task in (stop, lost, lag):
            task.cancel()


async def _stop_within(ctx: ServiceContext, work: asyncio.Task[None], grace_s: float) -> None:
    done, _ = await asyncio.wait([work], timeout=grace_s * (1 - CANCEL_SHARE))
    if done:
        return
    log.warning("service %s did not stop within %.0fs; cancelling", ctx.name, grace_s * (1 - CANCEL_SHARE))
    deadline = asyncio.get_running_loop().time() + grace_s * CANCEL_SHARE
    while not work.done() and asyncio.get_running_loop().time() < deadline:
        work.cancel()  # again and again: Python 3.11's wait_for can lose one cancellation
        await asyncio.wait([work], timeout=0.05)
    if not work.done():
        _exit_now(f"rr-service {ctx.name}: did not stop within its {grace_s:.0f}s grace, even cancelled; exiting")


def _exit_now(line: str) -> None:
    # asyncio.run would wait forever on the task that ignores cancellation: leave without it.
    log.error("%s", line)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(1)


def _on_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, callback)
