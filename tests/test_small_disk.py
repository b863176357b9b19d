"""A small disk: stream sizes are configurable, and a store without room is one line saying what to lower (tmpfs, root)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventbus.connection import connect
from eventbus.errors import StreamSetupError
from eventbus.natsserver import NatsServer, ServerSpec, free_port
from eventbus.streams import StreamSettings, provision

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, unmounted at teardown (needs root, as CI has)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_streams_sized_over_the_disk_are_refused_naming_the_setting_and_smaller_ones_fit(small_disk: Path) -> None:
    spec = ServerSpec(name="rr-small", port=free_port(), store_dir=str(small_disk / "nats" / "jetstream"))
    with NatsServer(spec, log_path=small_disk.parent / "nats.log") as server:
        bus = await connect(server.url, node_id="small")
        try:
            with pytest.raises(StreamSetupError) as refused:
                await provision(bus.js, StreamSettings())
            message = str(refused.value)
            assert "RR_EVENTS needs 50.00 GiB reserved but JetStream has no room" in message, message
            assert message.endswith("lower streams.events_max_gib in the config"), message
            small = StreamSettings(events_max_gib=0.02, telemetry_max_gib=0.01, deadletter_max_gib=0.01)
            assert set((await provision(bus.js, small)).values()) <= {"created", "updated"}
        finally:
            await bus.close()
