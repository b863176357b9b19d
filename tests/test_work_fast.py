"""The work fold's fast paths (an item's own attempt reporting in order) equal the general transition they skip."""

from __future__ import annotations

import msgspec
from hypothesis import given

from eventbus import events as ev
from projections import work
from projections.base import at_position, fold_events
from tests.test_projections import LOGS, PROPERTY, T0, numbered


@PROPERTY
@given(LOGS)
def test_every_fast_step_equals_the_general_transition_from_the_same_state(log: list[ev.Event]) -> None:
    # Before each event, both ways from the same state: a fast path either declines (None) or gives
    # exactly what the table and the attempt rules give.
    state = work.WorkState()
    taken = 0
    for seq, event in numbered(log):
        if event.type_name() not in work.PROJECTION.reads:
            continue
        fast = work.FAST_PATHS.get(type(event))
        if fast is not None and (event.epoch is None or type(event) is ev.WorkAssigned):
            quick = fast(state, event, seq)
            if quick is not None:
                taken += 1
                assert quick == work.general_transition(state, event, seq)
        state = work.apply(state, event, seq)
    assert work.PROJECTION.finished(at_position(state, len(log))) == _general_fold(log) == fold_events(work.PROJECTION, numbered(log))


def _general_fold(log: list[ev.Event]) -> work.WorkState:
    saved = dict(work.FAST_PATHS)
    work.FAST_PATHS.clear()
    try:
        return fold_events(work.PROJECTION, numbered(log))
    finally:
        work.FAST_PATHS.update(saved)


def test_a_healthy_life_takes_the_fast_paths_and_folds_as_the_general_path_does() -> None:
    life: list[ev.Event] = [
        ev.LeaderElected(role="scheduler", node="gpu-1", epoch=1, source="gpu-1"),
        ev.WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, ts=T0),
        ev.WorkAssigned(work_id="w-1", node="gpu-2", attempt=1, deadline=T0, epoch=1, ts=T0),
        ev.WorkStarted(work_id="w-1", node="gpu-2", attempt=1, ts=T0),
        ev.WorkProgress(work_id="w-1", node="gpu-2", attempt=1, fraction=0.5, ts=T0),
        ev.WorkProgress(work_id="w-1", node="gpu-3", attempt=1, fraction=0.6, ts=T0),  # another node's: general path
        ev.WorkCompleted(work_id="w-1", node="gpu-2", attempt=1, ts=T0),
    ]
    state = work.WorkState()
    for seq, event in numbered(life):
        fast = work.FAST_PATHS.get(type(event))
        if fast is not None and type(event) is not ev.WorkAssigned:
            declined = seq == 6
            assert (fast(state, event, seq) is None) == declined, f"seq {seq}"
        state = work.apply(state, event, seq)
    assert state == _general_fold(life)
    item = state.items["w-1"]
    assert (item.status, item.started, item.settled, item.completed_by) == (work.WorkStatus.COMPLETED, ((1, "gpu-2"),),
                                                                           ((1, "gpu-2"),), (1, "gpu-2"))
    assert state.counts == {"completed": 1} and state.anomaly_count == 1
    assert msgspec.json.encode(state.items["w-1"]) == msgspec.json.encode(_general_fold(life).items["w-1"])
