"""Results of items that ended failed or cancelled are not live data, in every view (pure folds)."""

from __future__ import annotations

import datetime as dt

from cli.commands.data import data_view
from config.sections.pipeline import PipelineSettings
from eventbus.events import (
    ArtifactRef,
    EvaluationComplete,
    Event,
    SelfplayComplete,
    TrainingComplete,
    WorkAdded,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
)
from projections import data, elo
from projections.withdrawal import Withdrawals, apply
from services.leader.pipeline import decide
from services.leader.pipeline_view import PipelineView
from services.leader.pipeline_view import apply as pipeline_apply
from tests.terms import in_term

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def batch(work_id: str, samples: int = 600, at: float = 0) -> SelfplayComplete:
    return SelfplayComplete(
        batch_id=f"{work_id}-a1", work_id=work_id, node="n1", board_type="hex8", num_players=2, num_games=10,
        num_samples=samples, data=ArtifactRef(path=f"/data/{work_id}.npz", size_bytes=100, sha256="s"),
        ts=T0 + dt.timedelta(seconds=at),
    )


def failed(work_id: str) -> WorkFailed:
    return WorkFailed(work_id=work_id, reason="gave up after 3 failed attempts")


def completed(work_id: str) -> WorkCompleted:
    return WorkCompleted(work_id=work_id, node="n1", attempt=3)


def fold_data(events: list[Event]) -> data.DataState:
    state = data.DataState()
    for seq, event in enumerate(in_term(events), start=1):
        state = data.apply(state, event, seq)
    return state


def test_the_rule_failed_items_count_again_when_completed_late_cancelled_ones_never() -> None:
    w = Withdrawals()
    w = apply(w, failed("a"))
    assert not w.counts("a") and w.counts("b")
    assert apply(w, completed("a")).counts("a"), "a late completion the work fold accepted"
    cancelled = apply(Withdrawals(), WorkCancelled(work_id="c"))
    assert not apply(cancelled, completed("c")).counts("c")


def test_rr_data_counts_no_batch_of_a_failed_or_cancelled_item() -> None:
    state = fold_data([batch("good", at=1), batch("bad", at=2), failed("bad"), batch("gone", at=3),
                       WorkCancelled(work_id="gone")])
    hex8 = state.configs["hex8_2p"]
    assert (hex8.batches, hex8.samples, hex8.newest_batch) == (1, 600, "good-a1")
    view = data_view(state, T0, limit=10)
    assert [b.batch_id for b in view.batches] == ["good-a1"] and view.total_batches == 1
    assert view.withdrawn_batches == 2
    # the failed item completes late after all: its batch counts again
    again = data.apply(state, completed("bad"), state.last_seq + 1)
    assert (again.configs["hex8_2p"].batches, again.configs["hex8_2p"].newest_batch) == (2, "bad-a1")


def test_a_batch_reported_after_its_item_failed_is_kept_but_not_counted_until_completed() -> None:
    state = fold_data([failed("late"), batch("late")])
    assert "late-a1" in state.batches and "hex8_2p" not in state.configs
    state = data.apply(state, completed("late"), 3)
    assert state.configs["hex8_2p"].batches == 1


def pipeline(events: list[Event]) -> PipelineView:
    view = PipelineView()
    for seq, event in enumerate(in_term(events), start=1):
        view = pipeline_apply(view, event, seq)
    return view


def test_the_pipeline_trains_on_no_batch_and_evaluates_no_candidate_of_a_failed_item() -> None:
    settings = PipelineSettings(min_new_samples=1000, evaluation_games=10)
    events: list[Event] = [batch("s1"), batch("s2"), failed("s2")]
    assert decide(pipeline(events), settings) == [], "600 live samples: not enough for training"
    events.append(batch("s3"))
    [training] = decide(pipeline(events), settings)
    assert isinstance(training, WorkAdded) and "s2-a1" not in training.input_batch_ids()
    candidate = TrainingComplete(model_id="m1", work_id=training.work_id, node="n1", board_type="hex8", num_players=2,
                                 checkpoint=ArtifactRef(path="/m1.pth", size_bytes=1, sha256="x"))
    events += [training, candidate, WorkCancelled(work_id=training.work_id)]
    assert [e for e in decide(pipeline(events), settings) if isinstance(e, WorkAdded) and e.work_type == "evaluation"] == []


def test_elo_ignores_ratings_of_an_evaluation_that_ended_failed() -> None:
    state = elo.EloState()
    rating = EvaluationComplete(model_id="m1", work_id="e1", node="n1", opponent="random", games=10, wins=9, losses=1,
                                win_rate=0.9, elo=380.0)
    for seq, event in enumerate([rating, failed("e1")], start=1):
        state = elo.apply(state, event, seq)
    assert elo.latest_elo(state, "m1") is None and elo.ratings(state, "m1") == ()
