"""Write-side fencing: JetStream stores a leader's decision only while the leader's own election is the newest."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import msgspec
import pytest

from cluster.leadership.term import NotLeader, Term
from eventbus.errors import Fenced
from eventbus.events import (
    ConfigChanged,
    Event,
    HostOnline,
    LeaderElected,
    LeaderLost,
    ModelPromoted,
    WorkAdded,
    WorkAssigned,
    WorkFailed,
    WorkStarted,
)
from eventbus.history import last_on, last_sequence
from eventbus.natsserver import NatsServer
from eventbus.publisher import FenceToken, Publisher
from eventbus.subjects import election_filter
from projections import bundle
from projections.pmap import enc_hook
from servicekit.rebuild import state_at_seq
from tests.bus_harness import provisioned_bus
from tests.test_election import leader_events, node

TICK = ConfigChanged(name="decision")
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


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


async def test_a_forged_election_fences_the_leader_out_once_and_the_leader_announces_over_it(
    nats_url: str, eventually: Any
) -> None:
    async with provisioned_bus(nats_url, node_id="gpu-1") as bus, node(nats_url, "a") as a:
        term = (await eventually(lambda: a.terms, timeout=5, message="a leads"))[0]
        assert term.fence is not None
        announced = await last_on(bus, election_filter("scheduler"))
        assert announced is not None and announced.seq == term.fence.seq
        # A node that may publish on the election subjects claims the role with a made-up epoch.
        forged = await Publisher(bus).publish(LeaderElected(role="scheduler", node="gpu-1", epoch=10**6))
        with pytest.raises(NotLeader):
            await term.publish(TICK)
        await eventually(lambda: a.cancelled_at, timeout=5, message="a's leader work cancelled at once")
        lost = await eventually(lambda: _lost_of(bus, term.epoch), timeout=5, message="a announces its loss")
        assert "fenced out" in lost.reason
        # The lease says a may lead again, and no lease ever gave epoch 10**6: a announces after the forgery.
        again = (await eventually(lambda: a.terms[1:], timeout=10, message="a leads again"))[0]
        assert again.epoch < 10**6 and again.fence is not None and again.fence.seq > forged.seq
        assert (await again.publish(TICK)).event.epoch == again.epoch
        view = (await state_at_seq(bus, use_snapshot=False, candidates=("a", "b"))).state
    leader = view.cluster.leaders["scheduler"]
    assert (leader.node, leader.epoch) == ("a", again.epoch)
    assert any("gpu-1, which is not a candidate" in d.reason for d in view.cluster.fence.last_dropped)


def test_a_forged_election_with_a_made_up_epoch_changes_no_view() -> None:
    def stamped(event: Event, source: str, seq: int) -> tuple[int, Event]:
        return seq, msgspec.structs.replace(event, source=source, id=f"{source}:{seq}", ts=T0)

    real = [
        stamped(LeaderElected(role="scheduler", node="a", epoch=5), "a", 1),
        stamped(HostOnline(node="gpu-1", roles=["selfplay"], epoch=5), "a", 2),
        stamped(WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2), "a", 3),
        stamped(WorkAssigned(work_id="w-1", node="gpu-1", attempt=1, deadline=T0, epoch=5), "a", 4),
    ]
    forged = [  # what gpu-1 (a worker, not a candidate) can put on its own subjects
        stamped(LeaderElected(role="scheduler", node="gpu-1", epoch=999), "gpu-1", 5),
        stamped(ModelPromoted(model_id="evil", board_type="hex8", num_players=2, sha256="ee", generation=99, epoch=999), "gpu-1", 6),
        stamped(ModelPromoted(model_id="evil2", board_type="hex8", num_players=2, sha256="ee", generation=99), "gpu-1", 7),
        stamped(WorkFailed(work_id="w-1", reason="forged", epoch=999), "gpu-1", 8),
        stamped(LeaderElected(role="scheduler", node="a", epoch=999), "gpu-1", 9),  # announcing someone else's win
        stamped(LeaderElected(role="promoter", node="a", epoch=5), "a", 10),  # an epoch of another role
    ]
    after = [stamped(WorkStarted(work_id="w-1", node="gpu-1", attempt=1), "gpu-1", 11)]
    start = bundle.believing(bundle.ProjectionSet(), ("a", "b"))
    honest = bundle.fold_all_events(real + after, start)
    attacked = bundle.fold_all_events(real + forged + after, start)
    for part in ("cluster", "work", "models", "data"):
        assert _view_of(getattr(attacked, part)) == _view_of(getattr(honest, part)), part
    assert attacked.cluster.leaders["scheduler"].node == "a" and attacked.models.promoted == {}
    assert attacked.work.items["w-1"].status.value == "running"
    assert bundle.total_fenced(attacked) > bundle.total_fenced(honest)


def _view_of(part: Any) -> bytes:
    """A part's state without its fence and anomaly records: what readers see."""
    return msgspec.json.encode(msgspec.structs.replace(part, fence=None, last_seq=0, anomalies=(), anomaly_count=0),
                               enc_hook=enc_hook)


async def _lost_of(bus: Any, epoch: int) -> LeaderLost | None:
    return next((e for e in await leader_events(bus) if isinstance(e, LeaderLost) and e.epoch == epoch), None)


async def test_a_decision_without_an_ack_is_sent_again_while_the_term_may_act(
    nats_url: str, nats_server: NatsServer, eventually: Any
) -> None:
    async with provisioned_bus(nats_url, node_id="a") as bus:
        pub = Publisher(bus, ack_timeout=0.5)
        elected = await pub.publish(LeaderElected(role="scheduler", node="a", epoch=5))
        term = Term("scheduler", "a", 5, None, pub, lambda: True, fence=FenceToken(election_filter("scheduler"), elected.seq))
        await asyncio.to_thread(nats_server.kill)
        pending = asyncio.ensure_future(term.publish(TICK))
        await asyncio.sleep(1.5)  # several tries without an answer: the term is still on
        assert not pending.done()
        await asyncio.to_thread(nats_server.restart)
        stored = await asyncio.wait_for(pending, timeout=20)
        assert stored.event.epoch == 5 and await last_sequence(bus) == stored.seq == elected.seq + 1


async def test_on_a_cluster_a_leaders_concurrent_decisions_are_all_stored_and_all_fenced_after_a_newer_election(
    nats_cluster: Any,
) -> None:
    # A clustered stream's leader refuses an expected-last-subject check while another one on the same
    # subject is still being replicated (err_code 10164). That is not a stale fence: a leader's
    # decisions, published side by side, all carry the same fence subject and must all be stored.
    from eventbus.streams import StreamSettings

    async with provisioned_bus(",".join(nats_cluster.urls), node_id="a", settings=StreamSettings(replicas=3)) as bus:
        pub = Publisher(bus)
        elected = await pub.publish(LeaderElected(role="scheduler", node="a", epoch=5))
        fence = FenceToken(election_filter("scheduler"), elected.seq)
        decisions = [WorkAdded(work_id=f"w-{i}", work_type="selfplay", board_type="hex8", num_players=2) for i in range(40)]
        stored = await asyncio.gather(*(pub.publish(d, fence=fence) for d in decisions))
        assert len({p.seq for p in stored}) == 40
        await Publisher(bus).publish(LeaderElected(role="scheduler", node="b", epoch=7))
        refused = await asyncio.gather(*(pub.publish(TICK, fence=fence) for _ in range(10)), return_exceptions=True)
        assert all(isinstance(r, Fenced) for r in refused), refused
