"""Data sync under faults, agents in this process: a corrupt stored batch is deleted, reported and copied again."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from cluster.leadership.term import Term
from config.sections.sync import SyncSettings
from config.settings import RrConfig
from eventbus.connection import Bus, connect
from eventbus.events import ArtifactRef, HostOnline, LeaderElected, SelfplayComplete
from eventbus.history import events
from eventbus.objects import BucketSpec, ensure_bucket, put_file
from eventbus.publisher import Publisher
from eventbus.streams import StreamSettings, provision
from projections.data import Batch, Transfer
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext
from services.leader.syncplan import sync_planner_loop
from services.sync.agent import SyncAgent
from services.sync.uploads import BatchUploads
from tests.helpers import eventually
from tests.randomfiles import random_artifact

pytestmark = pytest.mark.timeout(60)

SETTINGS = SyncSettings(plan_interval_s=0.2, poll_initial_s=0.05, poll_max_s=0.3, retry_after_s=0.3, retry_max_s=1.0,
                        transfer_timeout_s=5.0, idle_timeout_s=3.0)


@contextlib.asynccontextmanager
async def running(coroutines: list[object]) -> AsyncIterator[None]:
    tasks = [asyncio.ensure_future(c) for c in coroutines]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_corrupt_stored_batch_is_deleted_and_the_copy_planned_again(nats_url: str, tmp_path: Path) -> None:
    buses = {n: await connect(nats_url, node_id=n) for n in ("leader", "n1", "n2")}
    try:
        bus = buses["leader"]
        await provision(bus.js, StreamSettings())
        await ensure_bucket(bus, BucketSpec(name="rr_data"))
        publisher = Publisher(bus)
        await publisher.publish(LeaderElected(role="scheduler", node="leader", epoch=1))
        for node in ("n1", "n2"):
            await publisher.publish(HostOnline(node=node, epoch=1))
        source = tmp_path / "n1" / "b1.npz"
        ref = random_artifact(source, 700_000, node="n1")
        # An earlier upload of the batch, then a chunk nobody uploaded appended to it: its metadata
        # still names the right digest, so the source sees nothing wrong and only the target can tell.
        earlier = await put_file(bus, "rr_data", "b1", source)
        await bus.nc.publish(f"$O.rr_data.C.{earlier.nuid}", b"tampered")
        await bus.nc.flush()
        await publisher.publish(SelfplayComplete(batch_id="b1", work_id="w1", node="n1", board_type="hex8", num_players=2,
                                                 num_games=4, data=ref))
        stopping = asyncio.Event()
        agents = {n: SyncAgent(buses[n], Publisher(buses[n]), n, tmp_path / n / "sync", SETTINGS) for n in ("n1", "n2")}
        ctx = ServiceContext("scheduler", bus, RrConfig(sync=SETTINGS), CommonOptions(nats_url=nats_url, node_id="leader", config_path=None))
        term = Term("scheduler", "leader", 1, None, publisher, lambda: True)
        async with running([a.run(stopping) for a in agents.values()] + [sync_planner_loop(ctx, term)]):
            ends = await eventually(lambda: copy_ends(bus, ok=True), timeout=20, message="a verified copy")
            stopping.set()
        copy = tmp_path / "n2" / "sync" / "hex8_2p" / "b1.npz"
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == ref.sha256
        ends = await copy_ends(bus)
        assert [(e.transfer_id, e.ok) for e in ends] == [("b1>n2#1", False), ("b1>n2#2", True)]  # type: ignore[attr-defined]
        assert "700008 bytes" in ends[0].error and "deleted from the store" in ends[0].error  # type: ignore[attr-defined]
        assert agents["n1"].statistics().uploads == 1 and agents["n2"].statistics().received == 1
    finally:
        for connected in buses.values():
            await connected.close()


async def copy_ends(bus: Bus, ok: bool | None = None) -> list[object]:
    """The DATA_SYNC_COMPLETE events so far; with `ok`, [] until one with that outcome is there."""
    ends = [e async for _s, e in events(bus, subject="rr.evt.data.*.DATA_SYNC_COMPLETE.*")]
    return ends if ok is None or any(e.ok is ok for e in ends) else []  # type: ignore[attr-defined]


async def test_an_upload_no_stream_answers_is_retried_later_and_does_not_end_the_sync_service(bus: Bus, tmp_path: Path) -> None:
    # A clustered bucket whose stream leader went away answers a chunk's publish with "no responders"
    # (nats-py's NoStreamResponseError); here the bucket's stream takes metadata but no chunk subject, so
    # every chunk publish gets that answer from one server, deterministically.
    await bus.js.add_stream(StreamConfig(name="OBJ_rr_data", subjects=["$O.rr_data.M.>"], allow_direct=True))
    source = tmp_path / "b1.npz"
    source.write_bytes(b"x" * 1000)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    batch = Batch(batch_id="b1", work_id="w1", node="test", board_type="hex8", num_players=2, num_games=1, sha256=sha, size_bytes=1000)
    uploads = BatchUploads(bus, Publisher(bus), "test", tmp_path / "sync", SETTINGS)
    transfer = Transfer(transfer_id="b1>n2#1", batch_id="b1", from_node="test", to_node="n2")
    origin = ArtifactRef(path=str(source), size_bytes=1000, sha256=sha, node="test")
    assert await uploads.ensure(transfer, batch, origin)  # the copy stays open: no failure reported, no exception
    assert uploads.counts["uploads"] == 0 and await copy_ends(bus) == []
