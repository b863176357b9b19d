"""A leader loop stopped while a call of its round answers ends on that one cancel (real nats-server).

Python 3.11's asyncio.wait_for, under the client's publish and requests, returns the reply and
drops a cancellation that lands with it; a loop that waits on a timeout each round, not on its
cancellation, then went on deciding as a deposed leader until its fence refused it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from config.sections.distribution import DistributionSettings
from config.sections.sync import SyncSettings
from config.settings import RrConfig
from eventbus.connection import Bus
from services.leader import distribution, syncplan
from tests.bus_harness import provisioned_bus
from tests.leader_harness import leader_loop_running
from tests.lostcancel import LosingACancel, stopped_on_one_cancel, the_task_running

pytestmark = pytest.mark.timeout(60)

LEADER = "test-leader"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with provisioned_bus(nats_url, node_id=LEADER) as connected:
        yield connected


CASES = {  # loop, the module attribute holding a call of each round, a config that makes rounds often
    "distribution": (distribution.distribution_loop, distribution, "prune_store",
                     RrConfig(distribution=DistributionSettings(complete_check_s=0.1, store_gc_interval_s=0.2))),
    "sync planner": (syncplan.sync_planner_loop, syncplan, "plan_once", RrConfig(sync=SyncSettings(plan_interval_s=0.1))),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_leader_loop_stopped_while_a_round_calls_the_server_ends_on_that_one_cancel(
    bus: Bus, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    loop, module, call, config = CASES[case]
    losing = LosingACancel(getattr(module, call))
    monkeypatch.setattr(module, call, losing)
    async with leader_loop_running(bus, loop, config, node=LEADER):
        assert await stopped_on_one_cancel(the_task_running(loop), losing), f"the {case} loop went on after its cancellation"
