"""A worker's fence saved on its disk: the next start reads only the elections after it, and knows what a full read knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config.sections.leadership import LeadershipSettings
from eventbus.connection import Bus
from eventbus.events import LeaderElected
from eventbus.publisher import Publisher
from eventbus.streams import EVENTS_STREAM, StreamSettings, provision
from services.worker.fencefeed import FenceFeed
from tests.bus_harness import provisioned_bus
from tests.test_election import node

CANDIDATES = ("c-1", "c-2")
NAMES = ("assignments", "cancels")


async def _elect(bus: Bus, role: str, epoch: int) -> int:
    published = await Publisher(bus).publish(LeaderElected(role=role, node=bus.node_id, ttl_s=3.0, epoch=epoch))
    return published.seq


async def _primed(bus: Bus, saved_at: Path | None, candidates: tuple[str, ...] = CANDIDATES) -> FenceFeed:
    feed = FenceFeed(bus, NAMES, saved_at=saved_at)
    await feed.prime(candidates)
    return feed


async def test_a_restarted_worker_reads_only_the_elections_after_its_saved_fence_and_knows_what_a_full_read_does(
        nats_url: str, tmp_path: Path) -> None:
    saved_at = tmp_path / "fence.json"
    async with provisioned_bus(nats_url, node_id="c-1") as one, provisioned_bus(nats_url, node_id="c-2") as two:
        for bus, role, epoch in ((one, "scheduler", 3), (two, "registry", 4), (two, "scheduler", 6), (one, "scheduler", 9)):
            last = await _elect(bus, role, epoch)
        first_run = await _primed(one, saved_at)
        await first_run.save()
        await _elect(two, "scheduler", 5)  # stale: 9 leads
        after = await _elect(one, "registry", 11)

        restarted = await _primed(one, saved_at)
        assert first_run.primed_from == 1 and restarted.primed_from == last + 1
        full = await _primed(one, None)
        for name in NAMES:
            assert restarted.fence(name).view() == full.fence(name).view()
        assert full.fence("cancels").view().role_of == {3: "scheduler", 4: "registry", 6: "scheduler", 9: "scheduler",
                                                         5: "scheduler", 11: "registry"}
        # A save brings the kept fence up to the log's end, however far the consumers' fences are behind.
        await first_run.save()
        assert first_run.fence("cancels").view() != full.fence("cancels").view()
        again = await _primed(one, saved_at)
        assert again.primed_from == after + 1 and again.fence("assignments").view() == full.fence("assignments").view()


async def test_a_saved_fence_of_other_candidates_or_of_another_log_is_not_resumed(nats_url: str, tmp_path: Path) -> None:
    saved_at = tmp_path / "fence.json"
    async with provisioned_bus(nats_url, node_id="c-1") as bus:
        await _elect(bus, "scheduler", 3)
        await (await _primed(bus, saved_at)).save()
        assert (await _primed(bus, saved_at, ("c-1",))).primed_from == 1  # other candidates believe other elections

        # The log made again: the same sequence holds another election, whose epoch the saved fence never knew.
        await bus.js.delete_stream(EVENTS_STREAM)
        await provision(bus.js, StreamSettings())
        await _elect(bus, "scheduler", 7)
        again = await _primed(bus, saved_at)
        assert again.primed_from == 1
        assert again.fence("assignments").view().role_of == {7: "scheduler"}

        saved_at.write_bytes(b"not a fence")
        assert (await _primed(bus, saved_at)).primed_from == 1


async def test_a_fence_resumed_after_terms_of_real_electors_knows_their_lease_copies_as_a_full_read_does(
        nats_url: str, tmp_path: Path, eventually: Any) -> None:
    saved_at, leases = tmp_path / "fence.json", LeadershipSettings(ttl_s=2)
    async with provisioned_bus(nats_url, node_id="observer") as bus:
        async with node(nats_url, "a", settings=leases) as a:
            await eventually(lambda: a.terms, timeout=10, message="a leads")
            await (await _primed(bus, saved_at, ("a", "b"))).save()  # a verified fence: a's copy and election
        async with node(nats_url, "b", settings=leases) as b:  # a resigned (its delete copied): b's term follows
            await eventually(lambda: b.terms, timeout=10, message="b leads")
        resumed, full = await _primed(bus, saved_at, ("a", "b")), await _primed(bus, None, ("a", "b"))
        assert resumed.primed_from > 1
        view = resumed.fence("cancels").view()
        assert view == full.fence("cancels").view()
        assert view.verified and view.newest == {"scheduler": b.terms[0].epoch} and b.terms[0].epoch in view.acquired
