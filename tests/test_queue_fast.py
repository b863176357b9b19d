"""The scheduler queue's fast step (an item's own attempt reporting in order) equals the generic step it skips."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given

from eventbus import events as ev
from projections import work
from projections.base import fold_events
from services.leader import queue
from tests.test_projections import LOGS, PROPERTY, T0, numbered

# Retiring soon, so that a retirement falls due between reports too.
STARTS = (queue.QueueState(), queue.QueueState(work=work.WorkState(retire_after=3)))


@PROPERTY
@given(LOGS)
def test_every_fast_report_equals_the_generic_step_from_the_same_state(log: list[ev.Event]) -> None:
    for start in STARTS:
        state = start
        for seq, event in numbered(log):
            if type(event) in queue._REPORTS and event.epoch is None:
                quick = queue.reported(state, event, seq)  # type: ignore[arg-type]
                assert quick is None or quick == queue.general_apply(state, event, seq)
            state = queue.PROJECTION.apply(state, event, seq)
        with generic_only():
            assert state == fold_events(queue.PROJECTION, numbered(log), start)


def test_a_healthy_life_takes_the_fast_step_and_frees_its_node_on_completion() -> None:
    life: list[ev.Event] = [
        ev.LeaderElected(role="scheduler", node="gpu-1", epoch=1, source="gpu-1"),
        ev.HostOnline(node="gpu-2", roles=["selfplay"], epoch=1, source="gpu-1"),
        ev.WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, ts=T0),
        ev.WorkAssigned(work_id="w-1", node="gpu-2", attempt=1, deadline=T0, epoch=1, ts=T0),
        ev.WorkStarted(work_id="w-1", node="gpu-2", attempt=1, ts=T0),
        ev.WorkProgress(work_id="w-1", node="gpu-2", attempt=1, fraction=0.5, ts=T0),
        ev.WorkProgress(work_id="w-1", node="gpu-3", attempt=1, fraction=0.6, ts=T0),  # another node's: generic
        ev.WorkCompleted(work_id="w-1", node="gpu-2", attempt=1, ts=T0),
    ]
    state = queue.QueueState()
    taken = []
    for seq, event in numbered(life):
        if type(event) in queue._REPORTS:
            taken.append(queue.reported(state, event, seq) is not None)
        state = queue.PROJECTION.apply(state, event, seq)
    assert taken == [True, True, False, True]
    with generic_only():
        assert state == fold_events(queue.PROJECTION, numbered(life))
    assert (len(state.active), len(state.load), state.item_seqs["w-1"]) == (0, 0, 8)
    assert state.work.items["w-1"].status is work.WorkStatus.COMPLETED


def test_the_folded_states_are_not_tracked_by_the_collector() -> None:
    # Three of them are made every event; tracked, they make a rebuild spend about a third of its time collecting.
    item = work.WorkItem(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, started=((1, "gpu-1"),))
    assert not any(gc.is_tracked(held) for held in (item, work.WorkState(), queue.QueueState()))


@contextmanager
def generic_only() -> Iterator[None]:
    saved = queue._REPORTS
    queue._REPORTS = frozenset()
    try:
        yield
    finally:
        queue._REPORTS = saved
