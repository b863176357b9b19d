"""`rr timeline --work` starting from the API's kept cluster snapshot says exactly what the timeline from sequence 1 says."""

from __future__ import annotations

import random

import msgspec

from cli.commands.timeline import read_timeline, timeline_start
from eventbus import events as ev
from eventbus.connection import Bus
from eventbus.history import last_sequence, replay
from eventbus.objectdelete import delete_object
from eventbus.publisher import Publisher
from eventbus.snapshots import SNAPSHOT_BUCKET, kept_objects
from eventbus.streams import CONTEXT_STREAM
from ops.bench.bench_projection import fleet_log
from projections import timelinestart, workrefs
from projections.cluster import ClusterState
from projections.fence import Fence
from projections.fencing import FenceView
from projections.snapshotplan import SnapshotSettings
from projections.timeline import Selector, TimelineBuilder, TimelineLine
from servicekit.rebuild import state_at_seq
from servicekit.snapshotting import save_state
from tests.bus_harness import provisioned_bus
from tests.test_forensics import _incident
from tests.test_projections import T0, _sample_log


def test_a_snapshot_believing_some_candidates_or_having_admitted_an_unnamed_epoch_is_not_a_start() -> None:
    believed = FenceView(newest={"scheduler": 3}, role_of={3: "scheduler"}, newest_known=3, verified=True)
    start = timelinestart.start_state(ClusterState(last_seq=40, fence=Fence(view=believed, dropped=2)))
    assert start is not None and start.last_seq == 40 and start.cluster.fence.dropped == 2
    assert start.work.fence.view == start.models.fence.view == start.data.fence.view == believed
    assert start.work.last_seq == start.workrefs.last_seq == 40 and not start.work.items
    for view in (msgspec.structs.replace(believed, candidates=("gpu-0",)), msgspec.structs.replace(believed, newest_unknown=5)):
        assert timelinestart.start_state(ClusterState(last_seq=40, fence=Fence(view=view))) is None


async def _whole(bus: Bus, selector: Selector) -> list[TimelineLine]:
    builder = TimelineBuilder(selector)
    await replay(bus, builder)
    return builder.lines


async def test_random_items_timelines_from_kept_snapshots_equal_the_whole_logs(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(list(fleet_log(4_000)))  # leader changes, host flaps, ~260 items
        await Publisher(bus).publish_many(_incident())  # a zombie's rejected completion, a stale leader's ignored decision
        await Publisher(bus).publish_many(_sample_log(20, prefix="noise"))
        await Publisher(bus).publish_many(_open_at_the_end())
        end = await last_sequence(bus)
        settings = SnapshotSettings(max_kept=1_000)
        for seq in range(300, end, 300):  # as the API keeps them beside its bundle
            await save_state(bus, timelinestart.PROJECTION, (await state_at_seq(bus, timelinestart.PROJECTION, seq)).state,
                             settings=settings)
        await save_state(bus, workrefs.PROJECTION, (await state_at_seq(bus, workrefs.PROJECTION, end)).state)  # the index too

        rng = random.Random(19)
        items = [f"{kind}-{n:08d}" for kind, n in ((rng.choice("wte"), rng.randrange(270)) for _ in range(12))]
        started = 0
        for work in (*items, "w-1", "w-5", "w-6", "noise-3", "w-open", "no-such"):
            lines, _ = await read_timeline(bus, Selector(work=work))
            assert lines == await _whole(bus, Selector(work=work)), work
            first = lines[0].seq if lines else end
            started += await timeline_start(bus, first - 1) is not None
        assert started >= 8  # most items began past a usable snapshot
        # Past an open item's last record, its node's membership and leadership are still read and shown.
        shown = [line.type for line in (await read_timeline(bus, Selector(work="w-open")))[0]]
        assert shown[-3:] == ["HOST_OFFLINE", "LEADER_LOST", "LEADER_ELECTED"], shown

        # Leadership and membership are read only past the snapshot: fewer records than from sequence 1. Read
        # from RR_EVENTS, as where RR_CONTEXT is not provisioned: RR_CONTEXT's reads are whole windows of its
        # copies (eventbus/contextread.py), which on a log this small are the same with a snapshot or without.
        await bus.js.delete_stream(CONTEXT_STREAM)
        late = Selector(work="w-00000250")
        lines, read = await read_timeline(bus, late)
        assert lines and (await timeline_start(bus, lines[0].seq - 1)) is not None
        from_one, read_from_one = await _from_sequence_one(bus, late)
        assert from_one == lines and read < read_from_one, (read, read_from_one)


async def _from_sequence_one(bus: Bus, selector: Selector) -> tuple[list[TimelineLine], int]:
    """The timeline as read with no snapshot kept (the snapshot bucket emptied)."""
    for name in [name for _, _, name in await kept_objects(bus, timelinestart.PROJECTION.name)]:
        await delete_object(bus, SNAPSHOT_BUCKET, name)
    return await read_timeline(bus, selector)


def _open_at_the_end() -> list[ev.Event]:
    """An item still running when its node goes offline and leadership changes, other items' records in between."""
    started = [ev.HostOnline(node="gpu-4", epoch=9, source="gpu-1"),
               ev.WorkAdded(work_id="w-open", work_type="selfplay", board_type="hex8", num_players=2, source="gpu-1"),
               ev.WorkAssigned(work_id="w-open", node="gpu-4", attempt=1, deadline=T0, epoch=9, source="gpu-1"),
               ev.WorkStarted(work_id="w-open", node="gpu-4", attempt=1, pid=7, source="gpu-4")]
    return [*started, *_sample_log(5, prefix="late")[1:],
            ev.HostOffline(node="gpu-4", reason="heartbeat_timeout", silence_s=15.0, epoch=9, source="gpu-1"),
            ev.LeaderLost(role="scheduler", node="gpu-1", reason="lease expired", source="gpu-1"),
            ev.LeaderElected(role="scheduler", node="gpu-3", epoch=10, source="gpu-3")]
