"""A quarantine in force must not block the services' loops: its closure is computed once per change, in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from eventbus import events as ev
from eventbus.connection import Bus
from eventbus.publisher import Publisher
from projections import taint
from servicekit.taintoffloop import tainted_off_loop
from tests.helpers import eventually
from tests.test_scheduler_populator import batch, leader, logged, work
from tests.test_taint import LINEAGE, T, _batch, _quarantine, _state

BAD_GPU = _quarantine("q1", "node", "gpu-bad", since=T)


@pytest.fixture
def closures(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread of each closure computed (the lineage gone over whole)."""
    threads: list[int] = []
    real: Callable[..., taint.Tainted] = taint.closure

    def counted(*args: Any) -> taint.Tainted:
        threads.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(taint, "closure", counted)
    return threads


def test_an_unchanged_state_computes_its_closure_once_however_often_it_is_asked(closures: list[int]) -> None:
    state = _state(BAD_GPU)
    first = taint.tainted(state)
    assert all(taint.tainted(state) is first for _ in range(5))
    assert len(closures) == 1
    assert set(first.batches) == {"b3", "b4"}


def test_a_new_lineage_event_or_a_lift_gives_the_closure_of_the_new_state(closures: list[int]) -> None:
    state = _state(BAD_GPU)
    taint.tainted(state)
    grown = taint.apply(state, _batch("b9", "gpu-ok", T, model_id="m2"), len(LINEAGE) + 2)
    assert "b9" in taint.tainted(grown).batches and len(closures) == 2
    assert "b9" not in taint.tainted(state).batches and len(closures) == 2  # the older state's is still known
    lifted = taint.apply(grown, ev.QuarantineLifted(quarantine_id="q1", reason="fixed"), len(LINEAGE) + 3)
    assert taint.tainted(lifted) == taint.Tainted() and len(closures) == 2  # none in force: no closure at all


async def test_a_service_computes_a_changed_closure_in_a_thread_and_a_known_one_on_the_loop(closures: list[int]) -> None:
    state = _state(BAD_GPU)
    found = await tainted_off_loop(state)
    assert closures and threading.get_ident() not in closures  # never on the event loop's thread
    assert await tainted_off_loop(state) is found and len(closures) == 1


async def test_the_loop_keeps_running_while_a_closure_is_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = taint.closure

    def slow(*args: Any) -> taint.Tainted:
        assert release.wait(5), "the closure blocked the loop that was to release it"  # a year's lineage: seconds
        return real(*args)

    monkeypatch.setattr(taint, "closure", slow)
    computing = asyncio.ensure_future(tainted_off_loop(_state(BAD_GPU)))
    await asyncio.sleep(0)  # the computation starts
    release.set()  # the loop runs on meanwhile: it gets here before the closure ends
    assert set((await asyncio.wait_for(computing, 10)).batches) == {"b3", "b4"}


async def test_the_leaders_pipeline_computes_its_closure_off_its_loop_and_trains_on_no_tainted_batch(
    bus: Bus, nats_url: str, closures: list[int],
) -> None:
    pub = Publisher(bus)
    await pub.publish(ev.OutputsQuarantined(quarantine_id="q1", kind="node", target="n1", since=T, reason="bad gpu", requested_by="ops"))
    async with leader(nats_url, epoch=1):
        for n in range(1, 4):  # 180 samples, past min_new_samples: a training item were they not tainted
            await pub.publish(batch(n))
        await eventually(lambda: len(closures) >= 2, timeout=10, message="the pipeline never asked what is tainted")
        assert threading.get_ident() not in closures  # every closure went to a thread
    assert work(await logged(bus), "training") == []
