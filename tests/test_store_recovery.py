"""A full disk, then room again: the embedded server's store that stays broken is restarted by rr up (tmpfs, root)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

import pytest

from eventbus.connection import connect
from eventbus.errors import BusError
from eventbus.leases import LeaseBucket, LeaseValue
from eventbus.natsserver import free_port
from services.up.embedded import start_embedded
from services.up.layout import Layout
from services.up.storewatch import stuck_store, watch_store
from tests.helpers import eventually, fill, mounted_tmpfs

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20
ENOSPC_LINE = ("[7] 2026/12/06 07:34:36 [ERR] JetStream failed to store a msg on stream '$G > KV_rr_leases': "
               "write .../msgs/1.blk: no space left on device")


def test_a_store_still_failing_with_room_again_is_stuck_and_nothing_else_is() -> None:
    reason = stuck_store(f"[7] [INF] fine\n{ENOSPC_LINE}\n", free_bytes=40 * MIB, min_free_bytes=16 * MIB)
    assert reason is not None and "40 MiB free (>= 16 MiB)" in reason and "KV_rr_leases" in reason, reason
    assert stuck_store(ENOSPC_LINE, free_bytes=1 * MIB, min_free_bytes=16 * MIB) is None  # still full
    assert stuck_store("[7] [INF] Server is ready\n", free_bytes=40 * MIB, min_free_bytes=16 * MIB) is None


def _value(loops: dict[str, str] | None = None) -> LeaseValue:
    return LeaseValue(node="n1", incarnation="i1", ttl_s=30, acquired_at=dt.datetime.now(dt.UTC), loops=loops or {})


async def test_lease_writes_work_again_after_the_disk_is_freed_without_a_manual_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="services.up.storewatch")
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
