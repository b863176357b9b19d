"""The nemesis asks again for a target it cannot tell mid-failover, instead of skipping the fault."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from eventbus.errors import BusUnavailable
from ops.chaos import nemesis as nemesis_module
from ops.chaos.nemesis import Nemesis, NoTarget
from ops.chaos.schedule import Fault
from ops.fleet.plan import FleetError

FAULT = Fault(at_s=0.0, kind="kill_leader", hold_s=1.0)


class Scripted(Nemesis):
    """A nemesis whose target lookups fail as scripted, then hit."""

    def __init__(self, failures: list[Exception], wait_s: float) -> None:
        super().__init__(Path("/nonexistent"), None, None, target_wait_s=wait_s)  # type: ignore[arg-type]
        self.failures, self.calls = failures, 0

    async def _start(self, fault: Fault) -> Any:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "n2/scheduler pid 7", True, None


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nemesis_module, "TARGET_RETRY_S", 0.01)


def test_a_fault_whose_leader_is_not_known_yet_is_injected_once_the_leader_is_known() -> None:
    nemesis = Scripted([NoTarget("no scheduler leader elected yet"), BusUnavailable("lookup timed out")], wait_s=5.0)
    injected, _undo = asyncio.run(nemesis.inject(FAULT))
    assert injected.error == ""
    assert injected.victim == "n2/scheduler pid 7" and injected.hit_leader
    assert nemesis.calls == 3


def test_a_target_that_never_appears_is_reported_not_injected_after_the_wait() -> None:
    nemesis = Scripted([NoTarget("no scheduler leader elected yet")] * 1000, wait_s=0.2)
    injected, undo = asyncio.run(nemesis.inject(FAULT))
    assert injected.error == "no scheduler leader elected yet" and undo is None
    assert 2 <= nemesis.calls < 1000


def test_a_host_the_plan_does_not_have_is_not_asked_for_again() -> None:
    nemesis = Scripted([FleetError("no host n9 in the plan")], wait_s=5.0)
    injected, _undo = asyncio.run(nemesis.inject(FAULT))
    assert "n9" in injected.error and nemesis.calls == 1
