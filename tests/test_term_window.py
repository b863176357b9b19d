"""A leader's window of decisions sent back to back (Term.send, Term.settle_all): fenced exactly as one at a time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.leadership.term import NotLeader, Term
from eventbus.errors import InvalidEvent
from eventbus.events import LeaderElected, WorkAdded
from eventbus.history import events, last_sequence
from eventbus.natsserver import NatsServer
from eventbus.publisher import FenceToken, Published, Publisher
from eventbus.subjects import election_filter
from tests.bus_harness import provisioned_bus


def decisions(n: int, prefix: str = "w") -> list[WorkAdded]:
    return [WorkAdded(work_id=f"{prefix}-{i}", work_type="selfplay", board_type="hex8", num_players=2) for i in range(n)]


async def fenced_term(pub: Publisher, ended: list[str] | None = None) -> Term:
    elected = await pub.publish(LeaderElected(role="scheduler", node="a", epoch=5))
    return Term("scheduler", "a", 5, None, pub, lambda: True, fence=FenceToken(election_filter("scheduler"), elected.seq),
                on_fenced=None if ended is None else ended.append)


async def test_a_window_lands_in_order_with_the_terms_epoch_and_is_refused_whole_after_a_newer_election(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="a") as bus:
        pub = Publisher(bus)
        ended: list[str] = []
        term = await fenced_term(pub, ended)
        sent = [await term.send(d) for d in decisions(300)]
        stored = await term.settle_all(sent)
        assert all(isinstance(p, Published) for p in stored)
        seqs = [p.seq for p in stored if isinstance(p, Published)]
        assert seqs == list(range(2, 302)), "sent back to back, stored in the order sent"
        logged = [e async for _, e in events(bus) if isinstance(e, WorkAdded)]
        assert [e.work_id for e in logged] == [f"w-{i}" for i in range(300)] and {e.epoch for e in logged} == {5}

        newer = await Publisher(bus).publish(LeaderElected(role="scheduler", node="b", epoch=7))
        late = [await term.send(d) for d in decisions(20, "late")]
        with pytest.raises(NotLeader, match="fenced out"):
            await term.settle_all(late)
        assert await last_sequence(bus) == newer.seq, "the server stored none of the window after the newer election"
        assert not term.may_act() and len(ended) == 1
        with pytest.raises(NotLeader, match="fenced out"):
            await term.send(decisions(1, "after")[0])  # refused before it is sent


async def test_a_window_without_acks_is_sent_again_while_the_term_may_act_and_stored_once(
    nats_url: str, nats_server: NatsServer
) -> None:
    async with provisioned_bus(nats_url, node_id="a") as bus:
        pub = Publisher(bus, ack_timeout=0.5)
        term = await fenced_term(pub)
        await asyncio.to_thread(nats_server.kill)
        sent = [await term.send(d) for d in decisions(10)]
        pending = asyncio.ensure_future(term.settle_all(sent))
        await asyncio.sleep(1.5)  # several tries without an answer: the term is still on
        assert not pending.done()
        await asyncio.to_thread(nats_server.restart)
        stored = await asyncio.wait_for(pending, timeout=20)
        assert sorted(p.seq for p in stored if isinstance(p, Published)) == list(range(2, 12))
        assert await last_sequence(bus) == 11, "each decision stored once, whichever try got through"


async def test_a_decision_the_schema_refuses_is_not_sent_and_the_window_goes_on(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="a") as bus:
        term = await fenced_term(Publisher(bus))
        with pytest.raises(InvalidEvent):
            await term.send(WorkAdded(work_id="w-bad", work_type="selfplay", board_type="hex8", num_players=2, num_games=-1))
        stored = await term.settle_all([await term.send(d) for d in decisions(3)])
        assert [p.seq for p in stored if isinstance(p, Published)] == [2, 3, 4]


async def test_on_a_cluster_a_windows_colliding_fence_checks_are_all_retried_and_stored(nats_cluster: Any) -> None:
    # A clustered stream's leader answers err_code 10164 to a fence check while another one on the
    # same subject is being replicated: a window sent back to back collides on it all the time.
    from eventbus.streams import StreamSettings

    async with provisioned_bus(",".join(nats_cluster.urls), node_id="a", settings=StreamSettings(replicas=3)) as bus:
        term = await fenced_term(Publisher(bus))
        stored = await term.settle_all([await term.send(d) for d in decisions(60)])
        assert all(isinstance(p, Published) for p in stored), stored
        assert len({p.seq for p in stored if isinstance(p, Published)}) == 60
        assert await last_sequence(bus) == 61
