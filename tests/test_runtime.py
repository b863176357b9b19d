"""The service runtime: connect, check the streams, run a service's main until stopped, report failures plainly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from config.settings import RrConfig
from eventbus.connection import connect
from eventbus.errors import BusUnavailable, InvalidConfig
from eventbus.events import HostOnline, decode
from eventbus.history import Record, replay
from eventbus.natsserver import NatsServer
from servicekit.options import CommonOptions
from servicekit.runtime import SERVICES, ServiceEntry, register, require_streams, run_service
from tests import tiny_service
from tests.bus_harness import provisioned_bus
from tests.procs.run_tiny_service import GRACE_S

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_entry():  # type: ignore[no-untyped-def]
    """tests/tiny_service.py:main registered as a service for the duration of a test."""
    entry = ServiceEntry(name="tiny-test", target="tests.tiny_service:main", description="announces itself, then waits")
    register(entry)
    tiny_service.CONTEXTS.clear()
    yield entry
    SERVICES.pop(entry.name, None)


def options(url: str, node_id: str = "node-t", config_path: str | None = None) -> CommonOptions:
    return CommonOptions(nats_url=url, node_id=node_id, config_path=config_path)


async def _logged_events(url: str) -> list[Record]:
    """Provision the streams if need be, and return what the event log holds."""
    async with provisioned_bus(url, node_id="reader") as bus:
        records: list[Record] = []
        await replay(bus, records.append)
        return records


@contextlib.asynccontextmanager
async def watching(url: str) -> AsyncIterator[list[bytes]]:
    """Events as a plain subscriber sees them, collected while the block runs."""
    nc = await nats.connect(url)
    seen: list[bytes] = []

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        seen.append(msg.data)

    try:
        await nc.subscribe("rr.evt.>", cb=on_msg)
        await nc.flush()
        yield seen
    finally:
        await nc.close()


async def test_a_registered_service_runs_publishes_and_returns_when_stopped(nats_url: str, tiny_entry: ServiceEntry, eventually) -> None:
    assert SERVICES["tiny-test"] is tiny_entry
    assert tiny_entry.load() is tiny_service.main
    await _logged_events(nats_url)  # provisions the streams
    async with watching(nats_url) as seen:
        running = asyncio.ensure_future(run_service(SERVICES["tiny-test"], options(nats_url)))
        try:
            await eventually(lambda: seen or running.done(), message="the service published nothing")
            ctx = tiny_service.CONTEXTS[0]
            assert (ctx.name, ctx.node_id, ctx.config) == ("tiny-test", "node-t", RrConfig())
            await eventually(lambda: ctx.loop_lag.statistics().samples >= 1, message="loop lag is not measured")
            assert not running.done()
            ctx.stopping.set()
            await asyncio.wait_for(running, timeout=5)
        finally:
            running.cancel()
    records = await _logged_events(nats_url)
    assert [decode(r.data) for r in records] == [decode(data) for data in seen]
    event = decode(records[0].data)
    assert isinstance(event, HostOnline)
    assert (event.node, event.source, event.roles) == ("node-t", "node-t", ["tiny-test"])
    assert ctx.bus.nc.is_closed, "the runtime closes its connection"


async def test_a_service_that_ignores_stopping_is_cancelled_after_the_grace_period(nats_url: str, eventually) -> None:
    await _logged_events(nats_url)
    tiny_service.CONTEXTS.clear()
    entry = ServiceEntry(name="stubborn", target="tests.tiny_service:stubborn", description="never returns")
    running = asyncio.ensure_future(run_service(entry, options(nats_url), grace_s=0.2))
    try:
        await eventually(lambda: tiny_service.CONTEXTS or running.done())
        tiny_service.CONTEXTS[0].stopping.set()
        await asyncio.wait_for(running, timeout=5)
    finally:
        running.cancel()


async def test_a_failing_service_raises_its_bus_error_unwrapped(nats_url: str) -> None:
    await _logged_events(nats_url)
    entry = ServiceEntry(name="broken", target="tests.tiny_service:broken", description="loses the bus")
    with pytest.raises(BusUnavailable, match="tiny service lost the bus"):
        await asyncio.wait_for(run_service(entry, options(nats_url)), timeout=10)


async def test_a_service_ended_by_a_cancelled_call_fails_loudly_instead_of_stopping_cleanly(nats_url: str) -> None:
    await _logged_events(nats_url)
    entry = ServiceEntry(name="cut", target="tests.tiny_service:cancelled_inside", description="loses a call")
    with pytest.raises(BusUnavailable, match="service cut ended by a cancelled call"):
        await asyncio.wait_for(run_service(entry, options(nats_url)), timeout=10)


async def test_missing_streams_are_reported_with_the_command_that_creates_them(nats_url: str, tiny_entry: ServiceEntry) -> None:
    bus = await connect(nats_url, node_id="node-t")
    try:
        with pytest.raises(BusUnavailable, match=r"rr streams init"):
            await require_streams(bus)
    finally:
        await bus.close()
    with pytest.raises(BusUnavailable, match=r"stream RR_\w+ does not exist .*: run `rr streams init`"):
        await asyncio.wait_for(run_service(tiny_entry, options(nats_url)), timeout=10)
    assert tiny_service.CONTEXTS == [], "the service never started"


async def test_a_bad_config_file_stops_the_service_before_it_connects(tmp_path: Path, tiny_entry: ServiceEntry) -> None:
    bad = tmp_path / "rr.yaml"
    bad.write_text("streams:\n  replicas: many\n")
    # Nothing listens on port 9: reaching the bus at all would fail differently.
    with pytest.raises(InvalidConfig, match=r"streams\.replicas"):
        await run_service(tiny_entry, options("nats://127.0.0.1:9", config_path=str(bad)))


async def _sigterm_tiny(nats_url: str, tmp_path: Path, eventually, *function: str) -> tuple[int, float, list[bytes]]:
    """Run a tiny service in its own process until it published, SIGTERM it: its exit code, how long it took, what it published."""
    await _logged_events(nats_url)
    log = (tmp_path / "service.log").open("wb")
    async with watching(nats_url) as seen:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.procs.run_tiny_service", nats_url, "node-p", *function,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=log,
        )
        try:
            await eventually(lambda: seen or proc.returncode is not None, timeout=20, message="nothing published")
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 15)
            return code, time.monotonic() - started, seen
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            log.close()


async def test_sigterm_stops_a_service_process_cleanly(nats_url: str, tmp_path: Path, eventually) -> None:
    code, _took, seen = await _sigterm_tiny(nats_url, tmp_path, eventually)
    assert code == 0, (tmp_path / "service.log").read_text()
    assert decode(seen[0]).source == "node-p"


async def test_a_service_that_swallows_every_cancellation_still_exits_within_its_grace(
    nats_url: str, tmp_path: Path, eventually
) -> None:
    code, took, _seen = await _sigterm_tiny(nats_url, tmp_path, eventually, "deaf")
    output = (tmp_path / "service.log").read_text()
    assert code == 1 and took < GRACE_S + 2, output
    assert f"did not stop within its {GRACE_S:.0f}s grace, even cancelled; exiting" in output


async def test_a_task_left_running_that_loses_one_cancellation_does_not_keep_a_stopped_service_alive(
    nats_url: str, tmp_path: Path, eventually
) -> None:
    # asyncio.run cancels leftovers once and waits forever: the process must end them itself.
    code, took, _seen = await _sigterm_tiny(nats_url, tmp_path, eventually, "straggler")
    assert code == 0 and took < GRACE_S + 2, (tmp_path / "service.log").read_text()


async def test_closing_a_bus_whose_server_is_gone_ends_a_reconnect_task_that_lost_a_cancellation(
    nats_server: NatsServer, eventually
) -> None:
    # Python 3.11's wait_for can turn a cancel into the refused connect nats-py's reconnect loop
    # retries: such a task reconnected forever, and asyncio.run waited on it forever at exit.
    bus = await connect(nats_server.url, node_id="closer")
    await asyncio.to_thread(nats_server.kill)
    await eventually(lambda: bus.nc.is_reconnecting, timeout=10, interval=0.05)

    async def loses_its_first_cancel() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)

    stubborn = asyncio.create_task(loses_its_first_cancel())
    bus.nc._reconnection_task = stubborn  # as nats-py's reconnect would: the client sees only the newest
    await asyncio.sleep(0)
    started = time.monotonic()
    await bus.close(timeout=2.0)
    assert stubborn.done() and time.monotonic() - started < 3.0
    assert bus.nc.is_closed
