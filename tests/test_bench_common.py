"""The benches' shared pieces: a kept log is read again only when it is the one asked for, and then as a fresh start."""

from __future__ import annotations

from eventbus.connection import Bus
from eventbus.events import HostOnline
from eventbus.objects import BucketSpec, ensure_bucket
from eventbus.publisher import Publisher
from eventbus.streams import EVENTS_STREAM, StreamSettings
from ops.bench.common import kept_events_stream
from tests.event_samples import sample_event


async def test_a_kept_log_of_the_asked_size_is_reused_and_what_a_run_wrote_beside_it_deleted(bus: Bus) -> None:
    await Publisher(bus).publish_many([sample_event(HostOnline, i) for i in range(12)])
    declared = {s.config.name for s in await bus.js.streams_info()}
    await ensure_bucket(bus, BucketSpec(name="bench_snapshots", description="an earlier run's snapshots"))
    assert not await kept_events_stream(bus, 13, StreamSettings())  # another size: published again
    assert "OBJ_bench_snapshots" in {s.config.name for s in await bus.js.streams_info()}
    assert await kept_events_stream(bus, 12, StreamSettings())
    assert {s.config.name for s in await bus.js.streams_info()} == declared  # the log's lease source among them
    assert (await bus.js.stream_info(EVENTS_STREAM)).state.messages == 12
