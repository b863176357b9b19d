"""The live-fold shell every service keeps its folds with: resumes from a snapshot, outlives the server, waits for positions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from eventbus.events import WorkAdded
from eventbus.history import last_sequence, replay
from eventbus.natsserver import NatsServer
from eventbus.publisher import Publisher
from eventbus.tasks import stop_tasks
from projections import models, work
from projections.base import Folder, fold_records
from projections.fence import believing
from projections.snapshotplan import SnapshotSettings
from servicekit.livefold import LiveFold, aggregate_subjects, believing_only
from servicekit.snapshotting import SnapshotWriter, load_state, save_state
from tests.bus_harness import provisioned_bus, short_api_waits
from tests.lostcancel import LosingACancel, stopped_on_one_cancel

# While the server is down, a read or a consumer's creation fails only when its API wait runs out: the production
# waits (5 and 10 s) were most of the server-down tests' time. A shorter wait fails, and is retried, sooner.
DOWN_API_TIMEOUT_S = 1.0


def added(work_id: str) -> WorkAdded:
    return WorkAdded(work_id=work_id, work_type="selfplay", board_type="hex8", num_players=2)


@contextlib.asynccontextmanager
async def following(live: LiveFold) -> AsyncIterator[asyncio.Future[None]]:
    """`live.follow()` running for the block, cancelled after it."""
    task = asyncio.ensure_future(live.follow())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def full_fold(bus: Any) -> work.WorkState:
    records: list[Any] = []
    await replay(bus, records.append)
    return fold_records(work.PROJECTION, records)


async def test_a_live_fold_resumes_from_the_newest_snapshot_and_folds_only_the_tail(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        pub = Publisher(bus)
        await pub.publish_many([added(f"n{i}") for i in range(6)])
        saved = await full_fold(bus)
        await save_state(bus, work.PROJECTION, saved)
        await pub.publish_many([added(f"m{i}") for i in range(3)])

        folder = Folder(work.PROJECTION)
        live = LiveFold(bus, [folder], aggregate_subjects("work"), who="test")
        end = await live.start()
        stats = live.statistics()
        assert (stats.snapshot_seq, stats.folded, stats.position) == (6, 3, end) == (6, 3, 9)
        assert work.PROJECTION.finished(folder.state) == await full_fold(bus)


async def test_a_live_fold_saves_snapshots_while_following_when_asked(nats_url: str, eventually: Callable[..., Any]) -> None:
    async with provisioned_bus(nats_url) as bus:
        live = LiveFold(bus, [Folder(work.PROJECTION)], snapshots=SnapshotSettings(every_events=3, every_s=3600.0), who="test")
        await live.start()
        async with following(live):
            await Publisher(bus).publish_many([added(f"w{i}") for i in range(4)])
            await eventually(lambda: live.statistics().snapshot_seq >= 3, timeout=20, message="a snapshot saved")
        loaded = await load_state(bus, work.PROJECTION, "test")
        assert loaded is not None and loaded.header.last_seq == live.statistics().snapshot_seq


async def test_waiting_for_a_position_returns_once_folded_and_false_after_the_timeout(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        live = LiveFold(bus, [Folder(work.PROJECTION)], who="test")
        await live.start()
        async with following(live):
            waiting = asyncio.ensure_future(live.wait_position(2, timeout=30))
            assert await live.wait_changed(0.01)  # the catch-up is news to a loop that decides on it
            assert not await live.wait_changed(0.01)
            published = await Publisher(bus).publish_many([added("a"), added("b")])
            assert await waiting and live.position >= published[-1].seq
            assert await live.wait_changed(0.01)  # the folds read WORK_ADDED
            assert not await live.wait_position(99, timeout=0.2)


async def test_the_catch_up_waits_out_a_server_that_is_down_instead_of_failing(
    nats_server: NatsServer, eventually: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="servicekit.livefold")
    async with provisioned_bus(nats_server.url) as bus:
        await Publisher(bus).publish(added("a"))
        short_api_waits(bus, DOWN_API_TIMEOUT_S)
        await asyncio.to_thread(nats_server.stop)
        folder = Folder(work.PROJECTION)
        live = LiveFold(bus, [folder], who="test")
        starting = asyncio.ensure_future(live.start())
        try:
            await eventually(lambda: "reading the log failed" in caplog.text, timeout=60, message="a failed read retried")
            assert not starting.done()
            await asyncio.to_thread(nats_server.start)
            assert await asyncio.wait_for(starting, 60) == 1
        finally:
            starting.cancel()
        assert "a" in folder.state.items


async def test_following_outlives_the_server_restarting_and_folds_what_comes_after(
    nats_server: NatsServer, eventually: Callable[..., Any]
) -> None:
    async with provisioned_bus(nats_server.url) as bus:
        folder, live = await _started(bus)
        async with following(live) as task:
            await asyncio.to_thread(nats_server.stop)
            await asyncio.to_thread(nats_server.start)
            await eventually(lambda: live.statistics().follow_restarts >= 1, timeout=60, message="following again")
            await _folds_what_comes_after(bus, live, eventually)
            assert not task.done()  # retried, not ended
        assert {"before", "after"} <= set(folder.state.items)
        assert work.PROJECTION.finished(folder.state) == await full_fold(bus)


async def test_following_started_while_the_server_is_down_retries_until_it_is_back(
    nats_server: NatsServer, eventually: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="servicekit.livefold")
    async with provisioned_bus(nats_server.url) as bus:
        folder, live = await _started(bus)
        short_api_waits(bus, DOWN_API_TIMEOUT_S)
        await asyncio.to_thread(nats_server.stop)
        async with following(live) as task:
            await eventually(lambda: "following the log failed" in caplog.text, timeout=60, message="a failed subscribe retried")
            assert not task.done()
            await asyncio.to_thread(nats_server.start)
            await _folds_what_comes_after(bus, live, eventually)
        assert {"before", "after"} <= set(folder.state.items)


async def _started(bus: Any) -> tuple[Folder[work.WorkState], LiveFold]:
    """A live fold of the work queue caught up with a log holding item "before"."""
    await Publisher(bus).publish(added("before"))
    folder = Folder(work.PROJECTION)
    live = LiveFold(bus, [folder], who="test")
    await live.start()
    return folder, live


async def _folds_what_comes_after(bus: Any, live: LiveFold, eventually: Callable[..., Any]) -> None:
    """Item "after" published once JetStream answers again, and folded."""
    await eventually(lambda: _published(Publisher(bus), "after"), timeout=60, message="published after the restart")
    end = await last_sequence(bus)
    assert await live.wait_position(end, timeout=60), f"folded to {live.position}, the log ends at {end}"


async def _published(pub: Publisher, work_id: str) -> bool:
    try:
        await pub.publish(added(work_id))
    except Exception:  # noqa: BLE001 - JetStream may take a moment to answer after a restart
        return False
    return True


async def test_a_fold_resumed_from_a_leaders_snapshot_believes_this_nodes_candidates_not_the_snapshots(nats_url: str) -> None:
    # The leader's loop saved its fold believing any node's elections; a node configured with
    # candidates must keep refusing the others' after starting from that snapshot.
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish(added("w"))
        await save_state(bus, models.PROJECTION, msgspec.structs.replace(models.PROJECTION.initial(), last_seq=1))
        plain, kept = Folder(models.PROJECTION), Folder(models.PROJECTION, believing(models.PROJECTION.initial(), ("a", "b")))
        await LiveFold(bus, [plain], who="test").start()
        await LiveFold(bus, [kept], resumed=believing_only(("a", "b")), who="test").start()
        assert plain.state.last_seq == kept.state.last_seq == 1  # both started from the snapshot
        assert plain.state.fence.view.candidates == ()
        assert kept.state.fence.view.candidates == ("a", "b")


async def test_following_stopped_while_a_snapshot_is_saved_ends_on_that_one_cancel(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python 3.11's wait_for, under the snapshot's puts, returns the ack and drops a cancellation
    # that lands with it; the saving child then waited for the next due snapshot (never, past the
    # last record), and the follower's TaskGroup on it: a service or the API did not stop.
    losing = LosingACancel(SnapshotWriter.save_if_due)
    monkeypatch.setattr(SnapshotWriter, "save_if_due", losing)
    async with provisioned_bus(nats_url) as bus:
        live = LiveFold(bus, [Folder(work.PROJECTION)], snapshots=SnapshotSettings(every_events=3, every_s=math.inf), who="test")
        await live.start()
        task = asyncio.ensure_future(live.follow())
        try:
            await Publisher(bus).publish_many([added(f"w{i}") for i in range(4)])
            assert await stopped_on_one_cancel(task, losing), "following went on after its cancellation"
        finally:
            await stop_tasks([task], 10)
