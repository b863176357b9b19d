"""The populator's top-up, pure; and the leader's pipeline loop end to end on a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import msgspec
import pytest

from config.hosts import HostEntry, HostsConfig
from config.sections.pipeline import PipelineSettings
from config.sections.scheduler import SchedulerSettings
from config.settings import RrConfig
from eventbus.connection import Bus
from eventbus.events import (
    ArtifactRef,
    EvaluationComplete,
    Event,
    HostOnline,
    ModelPromoted,
    SelfplayComplete,
    TrainingComplete,
    WorkAdded,
    WorkAssigned,
    WorkCompleted,
)
from eventbus.history import Record, replay
from eventbus.integrity import decode_on
from eventbus.publisher import Published, Publisher
from eventbus.tasks import stop_tasks
from projections.bundle import ProjectionSet, fold_all_events
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext
from services.leader.pipeline import pipeline_loop
from services.leader.populator import decide, parse_config, populated_configs, top_up
from tests.bus_harness import provisioned_bus
from tests.lostcancel import LosingACancel, stopped_on_one_cancel
from tests.terms import as_term, in_term
from workload.ratings import anchor_id

SETTINGS = SchedulerSettings(backlog_per_node=2, populator_games=50)
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def configs_of(items: list[WorkAdded]) -> list[str]:
    return [f"{i.board_type}_{i.num_players}p" for i in items]


def test_idle_slots_get_selfplay_items_of_the_reference_boards() -> None:
    items = top_up({}, 1, {"hex8_2p": 1.0, "square8_2p": 1.0}, SETTINGS, alive_nodes=1, id_prefix="p")
    assert sorted(configs_of(items)) == ["hex8_2p", "square8_2p"]
    assert all(i.work_type == "selfplay" and i.num_games == 50 and i.requested_by == "populator" for i in items)
    assert len({i.work_id for i in items}) == 2
    assert populated_configs(SchedulerSettings()) == ["hex8_2p", "square8_2p"]
    assert populated_configs(SchedulerSettings(curriculum={"hex8_4p": 2.0})) == ["hex8_4p"]


def test_the_backlog_is_bounded_per_alive_node_and_counts_what_is_pending() -> None:
    assert len(top_up({}, 8, {"hex8_2p": 1.0}, SETTINGS, alive_nodes=2, id_prefix="p")) == 4
    assert len(top_up({"hex8_2p": 3}, 8, {"hex8_2p": 1.0}, SETTINGS, alive_nodes=2, id_prefix="p")) == 1
    assert top_up({"hex8_2p": 4}, 8, {"hex8_2p": 1.0}, SETTINGS, alive_nodes=2, id_prefix="p") == []


def test_no_idle_slot_or_disabled_populator_adds_nothing() -> None:
    assert top_up({}, 0, {"hex8_2p": 1.0}, SETTINGS, alive_nodes=3, id_prefix="p") == []
    off = SchedulerSettings(populator_enabled=False)
    assert top_up({}, 4, {"hex8_2p": 1.0}, off, alive_nodes=3, id_prefix="p") == []


def test_items_follow_the_curriculum_weights() -> None:
    items = top_up({}, 40, {"hex8_2p": 3.0, "square8_2p": 1.0}, SchedulerSettings(backlog_per_node=1), alive_nodes=40, id_prefix="p")
    assert configs_of(items).count("hex8_2p") == 30 and configs_of(items).count("square8_2p") == 10


def test_pending_items_count_toward_their_config_share() -> None:
    items = top_up({"hex8_2p": 3}, 4, {"hex8_2p": 1.0, "square8_2p": 1.0}, SETTINGS, alive_nodes=4, id_prefix="p")
    assert configs_of(items)[:3] == ["square8_2p"] * 3  # the emptier config catches up first
    assert sorted(configs_of(items)) == ["hex8_2p"] + ["square8_2p"] * 4


def test_parse_config_names_the_mistake() -> None:
    assert parse_config("square19_4p") == ("square19", 4)
    with pytest.raises(ValueError, match="hex8_2p"):
        parse_config("hex8")


def test_decide_counts_alive_nodes_and_their_free_slots_from_the_log() -> None:
    events: list[Event] = [
        HostOnline(node="a", roles=["mixed"]), HostOnline(node="b", roles=["mixed"]), HostOnline(node="c"),
        WorkAdded(work_id="w1", work_type="training", board_type="hex8", num_players=2),
        WorkAssigned(work_id="w1", node="a", attempt=1, deadline=NOW),
    ]
    state = fold_all_events(enumerate(in_term(events), start=1))
    hosts = HostsConfig(hosts={"a": HostEntry(max_parallel_jobs=1), "c": HostEntry(role="coordinator")})
    items = decide(state, hosts, 1, SETTINGS, NOW, "p")
    assert len(items) == 2  # only b is idle (a is busy, c does not play): 1 slot x backlog 2
    assert decide(ProjectionSet(), hosts, 1, SETTINGS, NOW, "p") == []


# ---- the pipeline loop on a real server -------------------------------------------------------


class FakeTerm:
    """A term that may always act: stamps its epoch and publishes through the leader's publisher."""

    def __init__(self, ctx: ServiceContext, epoch: int) -> None:
        self.epoch, self.role, self.node = epoch, "scheduler", ctx.node_id
        self._publisher = ctx.publisher

    def may_act(self) -> bool:
        return True

    async def publish(self, event: Event) -> Published:
        return await self._publisher.publish(msgspec.structs.replace(event, epoch=self.epoch))


@contextlib.asynccontextmanager
async def leader(url: str, epoch: int) -> AsyncIterator[None]:
    """pipeline_loop of a leader at `epoch` on its own connection, cancelled on exit."""
    async with provisioned_bus(url, node_id=f"leader-{epoch}") as bus:
        config = RrConfig(pipeline=PipelineSettings(min_new_samples=100, evaluation_games=4, decide_every_s=0.1))
        ctx = ServiceContext("scheduler", bus, config, CommonOptions(nats_url=url, node_id=bus.node_id, config_path=None))
        task = asyncio.ensure_future(pipeline_loop(ctx, FakeTerm(ctx, epoch)))  # type: ignore[arg-type]
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)


async def logged(bus: Bus) -> list[Event]:
    records: list[Record] = []
    await replay(bus, records.append)
    return [decode_on(r.subject, r.data, r.headers) for r in records]


def batch(n: int) -> SelfplayComplete:
    return SelfplayComplete(batch_id=f"b{n}", work_id=f"sp{n}", node="n1", board_type="hex8", num_players=2,
                            num_games=5, num_samples=60, data=ArtifactRef(path=f"/d/b{n}.npz", size_bytes=1, sha256="x"))


def work(events: list[Event], work_type: str) -> list[WorkAdded]:
    return [e for e in events if isinstance(e, WorkAdded) and e.work_type == work_type]


async def finish_training(pub: Publisher, item: WorkAdded, sha: str) -> None:
    # Assigned as the scheduler of the item's term would: an item completes only through an attempt.
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    await pub.publish(WorkAssigned(work_id=item.work_id, node="n1", attempt=1, deadline=deadline, epoch=item.epoch))
    await pub.publish(TrainingComplete(
        model_id=str(item.params["model_id"]), work_id=item.work_id, node="n1", board_type="hex8", num_players=2,
        checkpoint=ArtifactRef(path=f"/o/{item.work_id}.pth", size_bytes=3, sha256=sha)))
    await pub.publish(WorkCompleted(work_id=item.work_id, node="n1", attempt=1))


@pytest.mark.timeout(60)
async def test_pipeline_loop_trains_evaluates_and_promotes_once_across_leaders(nats_url: str, eventually) -> None:
    async with provisioned_bus(nats_url, node_id="n1") as bus:
        pub = Publisher(bus)
        await pub.publish_many([batch(1), batch(2)])
        async with leader(nats_url, epoch=1):
            [training] = await eventually(lambda: _having(bus, "training", 1), message="no training item")
            assert training.epoch == 1 and [i.path for i in training.inputs] == ["/d/b1.npz", "/d/b2.npz"]
            await finish_training(pub, training, "aaa")
            [evaluation] = await eventually(lambda: _having(bus, "evaluation", 1), message="no evaluation item")
            model = str(training.params["model_id"])
            assert evaluation.params["model_id"] == model
            await pub.publish(EvaluationComplete(model_id=model, work_id=evaluation.work_id, node="n1",
                                                 opponent=anchor_id("hex8", 2, 16), games=35, wins=30, losses=5,
                                                 win_rate=0.857, gate=True))
            promoted = await eventually(lambda: _promotions(bus), message="no promotion")
            assert [(p.model_id, p.generation, p.previous_model, p.epoch) for p in promoted] == [(model, 1, None, 1)]
        async with leader(nats_url, epoch=2):  # a new leader re-folds the log: nothing already decided again
            await pub.publish_many([batch(3), batch(4)])
            trainings = await eventually(lambda: _having(bus, "training", 2), message="no second training item")
            assert trainings[1].epoch == 2 and trainings[1].params["parent_model"] == model
            await finish_training(pub, trainings[1], "bbb")
            evaluations = await eventually(lambda: _having(bus, "evaluation", 2), message="no second evaluation")
            assert evaluations[1].params["best_model"] == model
        assert [p.model_id for p in await _promotions(bus)] == [model]


async def _having(bus: Bus, work_type: str, count: int) -> list[WorkAdded] | None:
    items = work(await logged(bus), work_type)
    assert len(items) <= count, f"more {work_type} items than expected: {items}"
    return items if len(items) == count else None


async def _promotions(bus: Bus) -> list[ModelPromoted]:
    return [e for e in await logged(bus) if isinstance(e, ModelPromoted)]


@pytest.mark.timeout(60)
async def test_populator_loop_supplies_the_idle_node_and_stops_at_the_backlog(nats_url: str, eventually) -> None:
    from services.leader.populator import populator_loop

    async with provisioned_bus(nats_url, node_id="n1") as bus:
        await as_term(Publisher(bus), HostOnline(node="n1", roles=["mixed"]), epoch=3)  # FakeTerm(ctx, 3)'s election
        settings = SchedulerSettings(backlog_per_node=3, populator_games=7, default_max_parallel_jobs=2)
        ctx = ServiceContext("scheduler", bus, RrConfig(scheduler=settings), CommonOptions(nats_url=nats_url, node_id="n1", config_path=None))
        task = asyncio.ensure_future(populator_loop(ctx, FakeTerm(ctx, 3)))  # type: ignore[arg-type]
        try:
            items = await eventually(lambda: _selfplay(bus, 3), message="no selfplay items")
            assert {i.num_games for i in items} == {7} and {i.epoch for i in items} == {3}
            assert sorted(configs_of(items))[:1] == ["hex8_2p"] and "square8_2p" in configs_of(items)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)
        assert len(work(await logged(bus), "selfplay")) == 3


async def _selfplay(bus: Bus, count: int) -> list[WorkAdded] | None:
    items = work(await logged(bus), "selfplay")
    assert len(items) <= count, f"more selfplay items than the backlog allows: {items}"
    return items if len(items) == count else None


@pytest.mark.timeout(60)
async def test_a_populator_stopped_while_it_publishes_ends_on_that_one_cancel(nats_url: str) -> None:
    # A deposed leader's loop is cancelled once; a cancel its publish lost (Python 3.11's wait_for)
    # left the loop deciding round after round until its fence refused it.
    from services.leader.populator import populator_loop

    async with provisioned_bus(nats_url, node_id="n1") as bus:
        await as_term(Publisher(bus), HostOnline(node="n1", roles=["mixed"]), epoch=3)
        settings = SchedulerSettings(backlog_per_node=3, populator_games=7, default_max_parallel_jobs=2)
        ctx = ServiceContext("scheduler", bus, RrConfig(scheduler=settings), CommonOptions(nats_url=nats_url, node_id="n1", config_path=None))
        term = FakeTerm(ctx, 3)
        term.publish = losing = LosingACancel(term.publish)  # type: ignore[method-assign]
        task = asyncio.ensure_future(populator_loop(ctx, term))  # type: ignore[arg-type]
        try:
            assert await stopped_on_one_cancel(task, losing), "the populator went on after its cancellation"
        finally:
            await stop_tasks([task], 10)  # cancelled again until it ends: a failing loop fails the test, never hangs it
