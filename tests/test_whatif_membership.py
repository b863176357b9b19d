"""`rr whatif`'s membership at a window's start, from the server's subject index, equals a fold of the log from its start."""

from __future__ import annotations

import datetime as dt

import msgspec

from cli.commands.whatif import FROM_INDEX, MEMBERSHIP, window_events
from cli.whatif.membership import online_at
from cli.whatif.recording import record
from eventbus import directreads
from eventbus import events as ev
from eventbus.history import events, last_sequence
from eventbus.integrity import decode_on
from eventbus.publisher import Publisher
from eventbus.subjects import event_subject
from ops.bench.bench_projection import NODES, fleet_log
from tests.bus_harness import provisioned_bus

BIG = ev.HostResources(gpus=[ev.GpuInfo(name="H100", memory_gb=80.0)])
SMALL = ev.HostResources(gpus=[ev.GpuInfo(name="L4", memory_gb=24.0)])


def _comings_and_goings() -> list[ev.Event]:
    """Nodes coming, going, coming back reporting otherwise, seen by several writers, among work."""
    timeout = "heartbeat_timeout"
    work = [ev.WorkAdded(work_id=f"w{i}", work_type="selfplay", board_type="hex8", num_players=2, source="api")
            for i in range(2)]
    return [
        ev.HostOnline(node="n1", roles=["selfplay"], resources=BIG, source="n1"),
        ev.HostOnline(node="n2", resources=SMALL, source="n2"),
        work[0],
        ev.HostOffline(node="n3", reason=timeout, source="leader-a"),  # never seen: changes nothing
        ev.HostOffline(node="n1", reason=timeout, source="leader-a"),
        ev.HostOnline(node="n3", roles=["training"], resources=BIG, source="n3"),
        ev.HostOnline(node="n1", roles=["training"], resources=SMALL, source="leader-b"),  # back, reporting otherwise
        ev.HostOffline(node="n2", reason="left", source="leader-b"),  # gone for good
        ev.HostOnline(node="n3", roles=["selfplay"], resources=SMALL, source="n3"),  # again while online: replaces
        ev.HostOffline(node="n3", reason=timeout, source="leader-b"),
        ev.HostOffline(node="n3", reason=timeout, source="leader-a"),  # already offline
        work[1],
        ev.HostOnline(node="n3", resources=BIG, source="leader-a"),
        ev.HostOffline(node="n1", reason=timeout, source="leader-a"),
    ]


async def test_the_nodes_online_from_the_subject_index_equal_a_fold_from_the_start_at_every_point(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_comings_and_goings())
        log = [(seq, e) async for seq, e in events(bus) if isinstance(e, ev.Event)]
        # A window after every record (what `rr whatif` folded from the log's start): who is online when it opens.
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        seen = set()
        for point in range(log[-1][0] + 1):
            newest = await directreads.last_per_subject(bus, MEMBERSHIP, point)
            indexed = online_at([(r.seq, decode_on(r.subject, r.data, r.headers)) for r in newest])
            folded = record([(seq, e) for seq, e in log if seq <= point], later, later + dt.timedelta(hours=1)).nodes
            assert record(indexed, later, later + dt.timedelta(hours=1)).nodes == folded, point
            seen.add(tuple((s.node, s.roles, s.vram_gb) for s in folded))
        assert {(), (("n1", ("selfplay",), 80.0), ("n2", ("mixed",), 24.0)), (("n1", ("training",), 24.0),),
                (("n1", ("training",), 24.0), ("n3", ("selfplay",), 24.0)), (("n3", ("mixed",), 80.0),)} <= seen


async def _windows_equal(bus: object, since: dt.datetime, until: dt.datetime) -> str:
    """The window read with membership from the index (or its fallback) records as the one read from the start; its membership."""
    got = await window_events(bus, since, until, skew=dt.timedelta(0))  # type: ignore[arg-type]
    from_start = await window_events(bus, since, until, skew=dt.timedelta(0), from_start=True)  # type: ignore[arg-type]
    assert from_start.membership == "read from the log's start, as asked"
    assert record(got.events, since, until) == record(from_start.events, since, until)
    return got.membership


async def test_a_window_records_the_same_with_membership_from_the_index_as_read_from_the_start(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        publisher, fleet = Publisher(bus), list(fleet_log(3_000))
        for chunk in range(3):  # stamped chunk by chunk: windows that open after flaps and close before the end
            await publisher.publish_many(fleet[chunk * 1_000:(chunk + 1) * 1_000])
        log = [(seq, e) async for seq, e in events(bus) if isinstance(e, ev.Event)]
        for opens, closes in ((1_200, 1_900), (2_100, None), (10, 600)):
            since = log[opens][1].ts
            until = log[closes][1].ts if closes is not None else dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
            assert since is not None and until is not None
            assert await _windows_equal(bus, since, until) == FROM_INDEX
            rec = record((await window_events(bus, since, until, skew=dt.timedelta(0))).events, since, until)
            assert rec.arrivals and {s.node for s in rec.nodes} == set(NODES)  # the whole fleet, flapped or not


async def test_where_the_index_cannot_say_the_membership_is_read_from_the_start_and_the_window_says_so(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        publisher = Publisher(bus)
        # A node's newest membership record does not decode: the fold skips it and goes by the one before.
        await publisher.publish(ev.HostOnline(node="n1", resources=BIG, source="n1"))
        await bus.js.publish(event_subject("host", "n1", "HOST_OFFLINE", "leader-a"), b"not an event")
        await publisher.publish(ev.WorkAdded(work_id="w1", work_type="selfplay", board_type="hex8", num_players=2))
        log = [(seq, e) async for seq, e in events(bus) if isinstance(e, ev.Event)]
        since, until = log[-1][1].ts, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
        assert since is not None
        assert "does not decode" in await _windows_equal(bus, since, until)
        # More membership subjects than the server answers at once (1,024): nodes enough for a big fleet's.
        await publisher.publish_many([ev.HostOnline(node=f"n{i:04d}", source="leader-a") for i in range(1_030)])
        await publisher.publish(ev.WorkAdded(work_id="w2", work_type="selfplay", board_type="hex8", num_players=2))
        since = msgspec.json.decode((await bus.js.get_last_msg("RR_EVENTS", "rr.evt.work.w2.>")).data, type=ev.WorkAdded).ts
        assert since is not None and await last_sequence(bus) > 1_030
        assert "more subjects match than the server answers at once" in await _windows_equal(bus, since, until)
