"""A small disk: stream sizes are configurable, and a store without room is one line saying what to lower (tmpfs, root)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventbus.connection import connect
from eventbus.errors import StreamSetupError
from eventbus.natsserver import NatsServer, ServerSpec, free_port
from eventbus.streams import StreamSettings, provision
from tests.api_harness import running_api, wait_caught_up
from tests.helpers import fill, mounted_tmpfs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, unmounted at teardown (needs root, as CI has)."""
    with mounted_tmpfs(tmp_path / "small", "64m") as mount:
        yield mount


async def test_streams_sized_over_the_disk_are_refused_naming_the_setting_and_smaller_ones_fit(small_disk: Path) -> None:
    spec = ServerSpec(name="rr-small", port=free_port(), store_dir=str(small_disk / "nats" / "jetstream"))
    with NatsServer(spec, log_path=small_disk.parent / "nats.log") as server:
        bus = await connect(server.url, node_id="small")
        try:
            with pytest.raises(StreamSetupError) as refused:
                await provision(bus.js, StreamSettings())
            message = str(refused.value)
            assert "RR_EVENTS needs 20.00 GiB reserved but JetStream has no room" in message, message
            assert message.endswith("lower streams.events_max_gib in the config"), message
            small = StreamSettings(events_max_gib=0.02, telemetry_max_gib=0.01, deadletter_max_gib=0.01, context_max_gib=0.002)
            assert set((await provision(bus.js, small)).values()) <= {"created", "updated"}
        finally:
            await bus.close()


async def test_health_is_503_naming_the_free_space_while_the_data_dir_is_full_and_200_once_it_returns(
        nats_url: str, small_disk: Path) -> None:
    async with running_api(nats_url, storage_path=str(small_disk), min_free_mib=16) as api:
        await wait_caught_up(api.base, 0)
        fill(small_disk / "filler")
        answer = await api.get("/health")
        doc = answer.json()
        assert answer.status == 503 and doc["status"] == "low_disk", doc
        assert doc["storage_free_mib"] < 16 and "api.min_free_mib=16" in doc["reason"], doc
        (small_disk / "filler").unlink()
        answer = await api.get("/health")
        assert answer.status == 200 and answer.json()["storage_free_mib"] > 16, answer.json()
