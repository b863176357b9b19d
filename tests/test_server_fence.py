"""Write-side fencing: JetStream stores a leader's decision only while the leader's own election is the newest."""

from __future__ import annotations

import time
from typing import Any

import pytest

from eventbus.errors import Fenced
from eventbus.events import ConfigChanged, LeaderElected, LeaderLost
from eventbus.history import last_on, last_sequence
from eventbus.publisher import FenceToken, Publisher
from eventbus.subjects import election_filter
from services.leadership.term import NotLeader, Term
from tests.bus_harness import provisioned_bus
from tests.test_election import leader_events, node

TICK = ConfigChanged(name="leader-tick")


async def test_a_fenced_publish_is_stored_while_its_election_is_newest_and_refused_at_once_after(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="a") as bus:
        pub = Publisher(bus, retry_for=30.0)
        elected = await pub.publish(LeaderElected(role="scheduler", node="a", epoch=5))
        fence = FenceToken(election_filter("scheduler"), elected.seq)
        stored = await pub.publish(TICK, fence=fence)
        assert stored.seq == elected.seq + 1
        # A term's end, a decision and another role's election do not move the fence.
        await pub.publish(LeaderLost(role="scheduler", node="a", reason="test", epoch=5))
        await pub.publish(LeaderElected(role="promoter", node="a", epoch=6))
        assert (await pub.publish(TICK, fence=fence)).seq == elected.seq + 4

        newer = await Publisher(bus).publish(LeaderElected(role="scheduler", node="b", epoch=7))
        started = time.monotonic()
        with pytest.raises(Fenced) as refused:
            await pub.publish(TICK, fence=fence)
        assert time.monotonic() - started < 2.0, "a fenced write is not retried"
        assert refused.value.expected == elected.seq and refused.value.subject_filter == "rr.evt.leader.scheduler.LEADER_ELECTED.*"
        assert f"wrong last sequence: {newer.seq}" in str(refused.value)
        assert await last_sequence(bus) == newer.seq, "the refused decision stored nothing"
        assert (await last_on(bus, election_filter("scheduler"))).seq == newer.seq  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="one expected-last-subject-sequence"):
            await pub.publish(TICK, fence=fence, expect_last_seq=1)


async def test_a_fenced_out_term_ends_at_once_and_says_why(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="a") as bus:
        pub = Publisher(bus)
        elected = await pub.publish(LeaderElected(role="scheduler", node="a", epoch=5))
        ended: list[str] = []
        term = Term("scheduler", "a", 5, None, pub, lambda: True,
                    fence=FenceToken(election_filter("scheduler"), elected.seq), on_fenced=ended.append)
        assert (await term.publish(TICK)).event.epoch == 5
        await pub.publish(LeaderElected(role="scheduler", node="b", epoch=7))
        with pytest.raises(NotLeader, match="fenced out"):
            await term.publish(TICK)
        assert not term.may_act() and len(ended) == 1 and "scheduler term 5 of a was fenced out" in ended[0]
        with pytest.raises(NotLeader, match="fenced out"):
            await term.publish(TICK)  # refused before it is sent


async def test_an_elector_fenced_out_by_a_newer_election_steps_down_at_once(nats_url: str, eventually: Any) -> None:
    async with provisioned_bus(nats_url, node_id="observer") as bus, node(nats_url, "a") as a:
        term = (await eventually(lambda: a.terms, timeout=5, message="a leads"))[0]
        assert term.fence is not None
        announced = await last_on(bus, election_filter("scheduler"))
        assert announced is not None and announced.seq == term.fence.seq
        # An election the lease knows nothing of (a rival, a bug) lands after a's own.
        await Publisher(bus).publish(LeaderElected(role="scheduler", node="observer", epoch=term.epoch + 1000))
        with pytest.raises(NotLeader):
            await term.publish(TICK)
        await eventually(lambda: a.cancelled_at, timeout=5, message="a's leader work cancelled at once")
        lost = await eventually(lambda: _lost_of(bus, term.epoch), timeout=5, message="a announces its loss")
        assert "fenced out" in lost.reason


async def test_an_elector_whose_epoch_is_older_than_an_election_in_the_log_never_acts(nats_url: str, eventually: Any) -> None:
    async with provisioned_bus(nats_url, node_id="observer") as bus:
        await Publisher(bus).publish(LeaderElected(role="scheduler", node="observer", epoch=10**6))
        async with node(nats_url, "a") as a:
            await eventually(lambda: a.elector.statistics().terms_won >= 1, timeout=5, message="a wins the lease")
            await eventually(lambda: a.elector.statistics().terms_lost >= 1, timeout=5, message="a gives it up")
            assert a.terms == [], "a stale winner runs no leader work"
        log = await leader_events(bus)
        assert [e for e in log if isinstance(e, LeaderElected) and e.node == "a"] == []


async def _lost_of(bus: Any, epoch: int) -> LeaderLost | None:
    return next((e for e in await leader_events(bus) if isinstance(e, LeaderLost) and e.epoch == epoch), None)
