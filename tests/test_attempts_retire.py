"""Completed items' attempts retire from the data, models and Elo folds: their snapshots stop growing with every item
ever assigned, and a late result of a retired item is still refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from eventbus import events as ev
from projections import data, elo, models
from projections.attempts import Attempts
from projections.base import Projection, fold_events
from projections.snapshot import decode_snapshot, encode_snapshot
from tests.terms import in_term
from tests.test_projections import LOGS, PROPERTY, T0, numbered

RETIRE_AFTER, SPAN = 20, 4
FOLDS: dict[str, tuple[Projection[Any], Callable[[Attempts], Any]]] = {
    "data": (data.PROJECTION, lambda a: data.DataState(attempts=a)),
    "models": (models.PROJECTION, lambda a: models.ModelsState(attempts=a)),
    "elo": (elo.PROJECTION, lambda a: elo.EloState(attempts=a)),
}


def _fold(name: str, events: Sequence[tuple[int, ev.Event]], attempts: Attempts, state: Any = None) -> Any:
    projection, initial = FOLDS[name]
    return fold_events(projection, events, state if state is not None else initial(attempts))


def _job(i: int) -> list[ev.Event]:
    """An item assigned, started and completed on one node."""
    w, node = f"w-{i}", f"gpu-{i % 3}"
    return [ev.WorkAssigned(work_id=w, node=node, attempt=1, deadline=T0),
            ev.WorkStarted(work_id=w, node=node, attempt=1), ev.WorkCompleted(work_id=w, node=node, attempt=1)]


def _results(work_id: str, attempt: int, node: str, tag: str) -> list[ev.Event]:
    """What the three folds judge of an item: a batch, a trained model, an evaluation."""
    return [
        ev.SelfplayComplete(batch_id=f"b-{tag}", work_id=work_id, node=node, board_type="hex8", num_players=2, num_games=5,
                            attempt=attempt),
        ev.TrainingComplete(model_id=f"m-{tag}", work_id=work_id, node=node, board_type="hex8", num_players=2, attempt=attempt),
        ev.EvaluationComplete(model_id=f"m-{tag}", work_id=work_id, node=node, opponent="random", games=10, wins=6, losses=4,
                              attempt=attempt),
    ]


# w-0 tried on gpu-1, superseded by attempt 2 on gpu-2, which completes and reports; then other items.
HISTORY = [
    ev.WorkAssigned(work_id="w-0", node="gpu-1", attempt=1, deadline=T0),
    ev.WorkAssigned(work_id="w-0", node="gpu-2", attempt=2, deadline=T0),
    ev.WorkStarted(work_id="w-0", node="gpu-2", attempt=2),
    ev.WorkCompleted(work_id="w-0", node="gpu-2", attempt=2),
    *_results("w-0", 2, "gpu-2", "current"),
]


def _refusals(state: Any) -> list[str]:
    return [a.reason for a in state.anomalies if a.about in ("w-0", "b-late", "m-late")]


def test_a_completed_item_leaves_the_attempts_retire_after_records_on_and_a_late_result_of_it_is_still_refused() -> None:
    attempts = Attempts(retire_after=RETIRE_AFTER, span=SPAN)
    for name in FOLDS:
        soon = _fold(name, numbered(in_term([*HISTORY, *_results("w-0", 1, "gpu-1", "late")])), attempts)
        later_log = in_term([*HISTORY, *(e for i in range(1, 12) for e in _job(i)), *_results("w-0", 1, "gpu-1", "late")])
        later = _fold(name, numbered(later_log), attempts)
        assert "w-0" in soon.attempts.items and "w-0" not in later.attempts.items, name
        assert len(later.attempts.items) < 11, f"{name}: the items completed {RETIRE_AFTER}+ records ago retired"
        assert len(_refusals(soon)) == len(_refusals(later)) == 1, (name, _refusals(soon), _refusals(later))
        assert "completed and retired" in _refusals(later)[0] and "is current" in _refusals(soon)[0], name
    batches = _fold("data", numbered(later_log), attempts)
    assert "b-current" in batches.batches and "b-late" not in batches.batches


def test_an_item_never_assigned_is_still_not_judged_and_one_still_open_keeps_its_attempts() -> None:
    attempts = Attempts(retire_after=RETIRE_AFTER, span=SPAN)
    log = in_term([ev.WorkAssigned(work_id="w-open", node="gpu-1", attempt=1, deadline=T0),
                   *(e for i in range(1, 12) for e in _job(i)), *_results("w-never", 1, "gpu-1", "never")])
    for name in FOLDS:
        state = _fold(name, numbered(log), attempts)
        assert "w-open" in state.attempts.items, name
        assert not [a for a in state.anomalies if a.about in ("w-never", "b-never", "m-never")], name


def test_a_fold_starting_late_in_the_log_does_not_walk_every_earlier_window() -> None:
    late = [(10**12 + i, e) for i, e in enumerate(in_term(_job(0) + _job(1)), 1)]
    state = _fold("data", late, Attempts(retire_after=RETIRE_AFTER, span=1))
    assert set(state.attempts.items.keys()) == {"w-0", "w-1"}


def _resumed(name: str, events: Sequence[tuple[int, ev.Event]], cut: int, attempts: Attempts) -> Any:
    projection = FOLDS[name][0]
    snapshot = decode_snapshot(projection, encode_snapshot(projection, _fold(name, events[:cut], attempts)))
    assert snapshot is not None
    return _fold(name, events[cut:], attempts, snapshot.state)


@PROPERTY
@given(LOGS, st.integers(min_value=1, max_value=12), st.integers(min_value=1, max_value=4))
def test_a_fold_resumed_anywhere_from_a_snapshot_equals_the_whole_fold(log: list[ev.Event], retire_after: int, span: int) -> None:
    events, attempts = numbered(log), Attempts(retire_after=retire_after, span=span)
    for name in FOLDS:
        whole = _fold(name, events, attempts)
        assert all(_resumed(name, events, cut, attempts) == whole for cut in range(0, len(events) + 1, 7)), name


def test_a_snapshot_of_the_folds_before_attempts_retired_is_refused_not_misread() -> None:
    for name, (projection, initial) in FOLDS.items():
        stored = encode_snapshot(dataclasses.replace(projection, version=4), initial(Attempts()))
        assert decode_snapshot(projection, stored) is None, name
