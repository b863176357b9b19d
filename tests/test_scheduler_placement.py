"""Items no alive node can run: marked with why, not counted as their config's backlog, given up after a wait."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import main
from config.hosts import HostEntry, HostsConfig
from config.sections.scheduler import SchedulerSettings
from config.settings import RrConfig
from eventbus.connection import Bus
from eventbus.events import (
    Event,
    HostOffline,
    HostOnline,
    WorkAdded,
    WorkAssigned,
    WorkFailed,
    WorkSchedulable,
    WorkUnschedulable,
)
from eventbus.publisher import Publisher
from projections import work
from projections.bundle import fold_all_events
from projections.sentences import sentence
from services.leader import queue
from services.leader.assigner import assignment_loop
from services.leader.decisions import placement_round, supervision_round
from services.leader.placement import unschedulable, unschedulable_reason
from services.leader.policy import NodeView, WorkView
from services.leader.populator import pending_selfplay, populator_loop
from tests.api_harness import running_api, wait_caught_up
from tests.bus_harness import provisioned_bus
from tests.headless import dump_dom
from tests.leader_harness import leader_loop_running
from tests.scheduler_harness import read_log
from tests.terms import TERM, as_term, decided, in_term

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SETTINGS = SchedulerSettings()


def item(work_type: str = "selfplay", board: str = "hex8", target: str | None = None, work_id: str = "w-1") -> WorkView:
    return WorkView(work_id=work_id, work_type=work_type, board_type=board, num_players=2, target_node=target)


def cpu(node: str, running: int = 0) -> NodeView:
    return NodeView(node=node, alive=True, roles=("mixed",), vram_gb=0.0, max_parallel_jobs=1, running=running)


def test_an_item_pinned_to_a_node_that_is_not_alive_says_so() -> None:
    reason = unschedulable_reason(item(target="ghost-node"), [cpu("vm")], SETTINGS)
    assert reason == "pinned to node ghost-node, which is not alive (alive: vm)"


def test_training_on_a_cpu_only_fleet_names_the_capability_it_lacks() -> None:
    reason = unschedulable_reason(item("training"), [cpu("vm"), cpu("vm2")], SETTINGS)
    assert reason == ("no alive node can run training on hex8_2p: vm, vm2: needs a GPU with >= 24 GB memory "
                      "(scheduler.capabilities), has no GPU")
    small = NodeView(node="g1", alive=True, roles=("mixed",), vram_gb=12.0)
    maintenance = NodeView(node="g2", alive=True, status="maintenance", vram_gb=80.0)
    reason = unschedulable_reason(item("training"), [small, maintenance], SETTINGS)
    assert reason is not None and "g1: needs a GPU with >= 24 GB memory (scheduler.capabilities), has 12 GB GPU memory" in reason
    assert "g2: status maintenance (hosts file)" in reason


def test_a_busy_node_that_could_run_it_makes_it_schedulable() -> None:
    assert unschedulable_reason(item(), [cpu("vm", running=1)], SETTINGS) is None
    assert unschedulable_reason(item(target="vm"), [cpu("vm", running=1)], SETTINGS) is None


def test_with_no_node_alive_nothing_is_judged() -> None:
    assert unschedulable([item(target="ghost-node")], [], SETTINGS) == {}


def added(work_id: str, target: str | None = None, work_type: str = "selfplay", ts: dt.datetime = T0) -> WorkAdded:
    return WorkAdded(work_id=work_id, work_type=work_type, board_type="hex8", num_players=2, target_node=target, ts=ts)


def fold(*events: Event) -> queue.QueueState:
    state = queue.apply(queue.QueueState(), TERM, 0)  # the term whose decisions these are, before seq 1
    for seq, event in enumerate(events, 1):
        state = queue.apply(state, decided(event), seq)
    return state


def test_placement_marks_the_item_once_and_clears_it_when_its_node_comes_back() -> None:
    log: list[Event] = [HostOnline(node="vm", ts=T0), added("w-ghost", "ghost-node"), added("w-ok")]
    [mark] = placement_round(fold(*log), None, SETTINGS)
    assert mark.work_id == "w-ghost" and isinstance(mark.event, WorkUnschedulable) and mark.expected == 2
    log.append(WorkUnschedulable(work_id="w-ghost", reason=mark.event.reason, ts=T0))
    state = fold(*log)
    assert placement_round(state, None, SETTINGS) == []  # marked once, not every round
    marked = state.work.items["w-ghost"]
    assert (marked.status, marked.unschedulable_since) == (work.WorkStatus.PENDING, T0) and "ghost-node" in marked.unschedulable
    log.append(HostOnline(node="ghost-node", ts=T0))
    [clear] = placement_round(fold(*log), None, SETTINGS)
    assert isinstance(clear.event, WorkSchedulable)
    log.append(clear.event)
    assert fold(*log).work.items["w-ghost"].unschedulable == ""


def test_an_unschedulable_item_is_given_up_after_the_configured_wait() -> None:
    state = fold(HostOnline(node="vm", ts=T0), added("w-ghost", "ghost-node"),
                 WorkUnschedulable(work_id="w-ghost", reason="pinned to node ghost-node, which is not alive", ts=T0))
    settings = SchedulerSettings(unschedulable_fail_after_s=600)
    assert supervision_round(state, T0 + dt.timedelta(seconds=599), settings) == []
    [give_up] = supervision_round(state, T0 + dt.timedelta(seconds=600), settings)
    assert isinstance(give_up.event, WorkFailed)
    assert give_up.event.reason == ("unschedulable for 600s (scheduler.unschedulable_fail_after_s 600): "
                                    "pinned to node ghost-node, which is not alive")
    never = SchedulerSettings(unschedulable_fail_after_s=0)
    assert supervision_round(state, T0 + dt.timedelta(days=30), never) == []


def test_the_populator_does_not_count_an_unschedulable_item_as_its_configs_backlog() -> None:
    log = [added("w-ghost", "ghost-node"), added("w-ok")]
    state = fold_all_events(enumerate(in_term(log), 1))
    assert pending_selfplay(state) == {"hex8_2p": 2}
    marked = fold_all_events([(4, decided(WorkUnschedulable(work_id="w-ghost", reason="gone")))], state)
    assert pending_selfplay(marked) == {"hex8_2p": 1}


def test_the_marks_read_as_sentences() -> None:
    assert sentence(WorkUnschedulable(work_id="w-1", reason="pinned to node g, which is not alive")) == (
        "work w-1 cannot run on any alive node: pinned to node g, which is not alive")
    assert sentence(WorkSchedulable(work_id="w-1", reason="back")) == "work w-1 can run again: back"


# ---- on a real server ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def leader(bus: Bus, config: RrConfig) -> AsyncIterator[None]:
    """The assigner and the populator of one term."""
    async with leader_loop_running(bus, assignment_loop, config):
        async with leader_loop_running(bus, populator_loop, config, announce=False):
            yield


async def logged(bus: Bus, kind: type[Event]) -> list[Any]:
    return [e for e in await read_log(bus) if isinstance(e, kind)]


@pytest.mark.timeout(90)
async def test_an_item_pinned_to_nowhere_does_not_delay_another_item_of_its_config(nats_url: str, eventually: Any) -> None:
    settings = SchedulerSettings(curriculum={"hex8_2p": 1.0}, backlog_per_node=1, default_max_parallel_jobs=1,
                                 populator_games=5, unschedulable_fail_after_s=0)
    async with provisioned_bus(nats_url, node_id="vm") as bus:
        pub = Publisher(bus)
        await as_term(pub, HostOnline(node="vm"))
        await pub.publish(WorkAdded(work_id="w-ghost", work_type="selfplay", board_type="hex8", num_players=2,
                                    num_games=5, target_node="ghost-node"))
        async with leader(bus, RrConfig(scheduler=settings)):
            async def populated_and_assigned() -> WorkAssigned | None:
                assigned = [a for a in await logged(bus, WorkAssigned) if a.node == "vm"]
                return assigned[0] if assigned else None

            first = await eventually(populated_and_assigned, timeout=30, message="a hex8 item assigned to vm")
        [mark] = await logged(bus, WorkUnschedulable)
        assert mark.work_id == "w-ghost" and mark.reason == "pinned to node ghost-node, which is not alive (alive: vm)"
        hex8 = [e for e in await logged(bus, WorkAdded) if e.requested_by == "populator"]
        assert first.work_id in {e.work_id for e in hex8} and all(e.board_type == "hex8" for e in hex8)
        assert not await logged(bus, WorkFailed)  # waiting is allowed: unschedulable_fail_after_s 0 never fails it


@pytest.mark.timeout(90)
async def test_training_on_a_cpu_only_fleet_is_marked_with_the_capability_then_failed(
    nats_url: str, eventually: Any, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({"hosts": {"vm": {"role": "mixed", "max_parallel_jobs": 1}}}))
    config = RrConfig(hosts_file=str(hosts), scheduler=SchedulerSettings(populator_enabled=False, unschedulable_fail_after_s=2))
    async with provisioned_bus(nats_url, node_id="vm") as bus:
        pub = Publisher(bus)
        await as_term(pub, HostOnline(node="vm"))
        await pub.publish(WorkAdded(work_id="w-train", work_type="training", board_type="hex8", num_players=2,
                                    params={"data": "a.npz"}))
        async with leader_loop_running(bus, assignment_loop, config):
            failed = await eventually(lambda: logged(bus, WorkFailed), timeout=30, message="the training item failed")
        [mark] = await logged(bus, WorkUnschedulable)
        assert "needs a GPU with >= 24 GB memory (scheduler.capabilities), has no GPU" in mark.reason
        assert failed[0].reason.startswith("unschedulable for ") and mark.reason in failed[0].reason
        assert not await logged(bus, WorkAssigned)


def test_a_node_gone_offline_makes_the_items_pinned_to_it_unschedulable() -> None:
    state = fold(HostOnline(node="vm", ts=T0), HostOnline(node="g", ts=T0), added("w", "g"), HostOffline(node="g", reason="x", ts=T0))
    [mark] = placement_round(state, HostsConfig(hosts={"vm": HostEntry()}), SETTINGS)
    assert "pinned to node g, which is not alive" in mark.event.reason  # type: ignore[attr-defined]


async def test_the_reason_is_shown_by_work_status_and_rr_work_list(nats_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    reason = "pinned to node ghost-node, which is not alive (alive: vm)"
    async with running_api(nats_url) as api:
        published = await as_term(Publisher(api.bus), added("w-ghost", "ghost-node", ts=dt.datetime.now(dt.UTC)),
                                       WorkUnschedulable(work_id="w-ghost", reason=reason))
        await wait_caught_up(api.base, published.seq)
        [shown] = (await api.get("/work/status")).json()["items"]
        assert (shown["status"], shown["unschedulable"]) == ("pending", reason) and shown["unschedulable_since"]
        assert await asyncio.to_thread(main, ["work", "list", "--nats", nats_url, "--node-id", "op"]) == 0
        assert f"unschedulable: {reason}" in capsys.readouterr().out


async def test_the_dashboard_badges_an_unschedulable_item_with_its_reason(nats_url: str, tmp_path: Path) -> None:
    reason = "no alive node can run training on hex8_2p: vm: needs a GPU with &gt;= 24 GB memory"
    async with running_api(nats_url) as api:
        published = await as_term(Publisher(api.bus), added("w-train", work_type="training", ts=dt.datetime.now(dt.UTC)),
                                       WorkUnschedulable(work_id="w-train", reason=reason.replace("&gt;", ">")))
        await wait_caught_up(api.base, published.seq)
        dom, console = await dump_dom(api.base + "/", tmp_path / "profile")
    assert console == [], "the page logged errors"
    assert ">unschedulable<" in dom and reason in dom
