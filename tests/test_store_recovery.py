"""A full disk, then room again: the embedded server's store that stays broken is restarted by rr up (tmpfs, root)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cli.up.embedded import start_embedded
from cli.up.layout import Layout
from cli.up.storewatch import stuck_store, watch_store
from eventbus.connection import Bus, connect
from eventbus.errors import BusError
from eventbus.events import Event, LeaderElected, WorkAdded, WorkAssigned
from eventbus.history import Record, replay
from eventbus.integrity import decode_on
from eventbus.leases import LeaseBucket, LeaseValue
from eventbus.natsserver import free_port
from eventbus.publisher import Publisher
from tests.helpers import eventually, fill, mounted_tmpfs
from tests.up_harness import wait_bus

pytestmark = pytest.mark.timeout(400)

PROJECT_ROOT = Path(__file__).resolve().parents[1]

MIB = 1 << 20
ENOSPC_LINE = ("[7] 2026/12/06 07:34:36 [ERR] JetStream failed to store a msg on stream '$G > KV_rr_leases': "
               "write .../msgs/1.blk: no space left on device")


def test_a_store_still_failing_with_room_again_is_stuck_and_nothing_else_is() -> None:
    reason = stuck_store(f"[7] [INF] fine\n{ENOSPC_LINE}\n", free_bytes=40 * MIB, min_free_bytes=16 * MIB)
    assert reason is not None and "40 MiB free (>= 16 MiB)" in reason and "KV_rr_leases" in reason, reason
    assert stuck_store(ENOSPC_LINE, free_bytes=1 * MIB, min_free_bytes=16 * MIB) is None  # still full
    assert stuck_store(ENOSPC_LINE, free_bytes=1 * MIB, min_free_bytes=0) is None  # a floor keeps a full disk from restart loops
    assert stuck_store("[7] [INF] Server is ready\n", free_bytes=40 * MIB, min_free_bytes=16 * MIB) is None


def _value(loops: dict[str, str] | None = None) -> LeaseValue:
    return LeaseValue(node="n1", incarnation="i1", ttl_s=30, acquired_at=dt.datetime.now(dt.UTC), loops=loops or {})


async def test_lease_writes_work_again_after_the_disk_is_freed_without_a_manual_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cli.up.storewatch")
    with mounted_tmpfs(tmp_path / "small", "64m") as mount:  # needs root, as CI has
        layout = Layout.under(mount)
        for path in (layout.store_dir, layout.log_dir):
            path.mkdir(parents=True)
        server = await start_embedded(layout, "127.0.0.1", free_port())
        stopping = asyncio.Event()
        watcher = asyncio.create_task(watch_store(server, layout.store_dir, stopping, min_free_mib=16, interval_s=1.0))
        bus = await connect(server.url, node_id="n1")
        try:
            leases = LeaseBucket(bus)
            await leases.ensure()
            revision = await leases.acquire("scheduler", _value(), expect_revision=0, timeout=2.0)
            fill(mount / "filler")
            big = _value({"pad": "x" * 20_000})  # renewals large enough to need new pages of the full disk
            with pytest.raises(BusError):
                for _ in range(500):
                    revision = await leases.renew("scheduler", big, revision=revision, timeout=2.0)
            (mount / "filler").unlink()

            async def renewed() -> bool:
                nonlocal revision
                try:
                    current = (await leases.read("scheduler")).revision
                    revision = await leases.renew("scheduler", _value(), revision=current, timeout=2.0)
                except BusError:
                    return False
                return True

            await eventually(renewed, timeout=60.0, interval=0.5, message="lease writes never recovered")
        finally:
            stopping.set()
            restarts = await watcher
            await bus.close()
            await server.stop()
    assert restarts >= 1
    assert any("restarting the embedded nats-server" in r.message and "no space left on device" in r.message
               for r in caplog.records), caplog.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _kinds(bus: Bus, kind: type[Event]) -> list[Event]:
    records: list[Record] = []
    await replay(bus, records.append)
    return [e for e in (decode_on(r.subject, r.data, r.headers) for r in records) if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def rr_up(data: Path, config: Path, port: int) -> AsyncIterator[tuple[Bus, Callable[[], list[str]]]]:
    """`rr up` on its own ports and data dir, stopped with SIGINT at the end; yields a client and its stderr so far."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RR_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "up", "--grace", "10", "--nats-port", str(port),
        "--api-port", str(_free_port()), "--data-dir", str(data), "--node-id", "lap-disk", "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=env, cwd=PROJECT_ROOT,
    )
    lines: list[str] = []

    async def read_stderr() -> None:
        assert proc.stderr is not None
        while raw := await proc.stderr.readline():
            lines.append(raw.decode(errors="replace").rstrip("\n"))

    reader = asyncio.create_task(read_stderr())
    bus: Bus | None = None
    try:
        bus = await wait_bus(port)
        yield bus, lambda: list(lines)
    finally:
        if bus is not None:
            await bus.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 60)
        await reader
        assert proc.returncode == 0, "\n".join(lines[-30:])


SMALL_CONFIG = """
streams: {events_max_gib: 0.02, telemetry_max_gib: 0.01, deadletter_max_gib: 0.01, context_max_gib: 0.002}
api: {min_free_mib: 16}
scheduler: {populator_enabled: false}
pipeline: {enabled: false}
worker:
  templates:
    selfplay: "{python} -m tests.procs.worker_child --pids {output_dir}/pids --progress 1 --progress-every 0.1"
"""


async def test_rr_up_on_a_disk_filled_then_freed_elects_a_leader_again_and_assigns_new_work(tmp_path: Path) -> None:
    config = tmp_path / "rr.yaml"
    config.write_text(SMALL_CONFIG)
    with mounted_tmpfs(tmp_path / "small", "64m") as data:  # needs root, as CI has
        async with rr_up(data / "rr", config, _free_port()) as (bus, stderr_lines):
            publisher = Publisher(bus)
            leases = LeaseBucket(bus)
            await eventually(lambda: _kinds(bus, LeaderElected), timeout=60, interval=0.2, message="a first leader")
            fill(data / "filler")
            # Large writes on a key of its own break the bucket's store as the leader's renewals would, sooner.
            with pytest.raises(BusError):
                for i in range(500):
                    await leases.acquire(f"disk-test-{i}", _value({"pad": "x" * 20_000}), expect_revision=0, timeout=2.0)
            (data / "filler").unlink()
            # The leader may assign from its still-valid lease for a while; what must happen is the restart.
            await eventually(lambda: any("restarting the embedded nats-server" in line for line in stderr_lines()),
                             timeout=90, interval=0.2, message="rr up restarts its server once space returns")

            async def added() -> bool:
                try:
                    await publisher.publish(WorkAdded(work_id="w-after", work_type="selfplay", board_type="hex8",
                                                      num_players=2, num_games=1))
                except BusError:
                    return False
                return True

            await eventually(added, timeout=90, interval=1.0, message="the event log takes writes again")

            async def assigned() -> bool:
                return any(e.work_id == "w-after" for e in await _kinds(bus, WorkAssigned))  # type: ignore[attr-defined]

            await eventually(assigned, timeout=120, interval=0.2, message="new work assigned after the disk was freed")
