"""The pipeline's decisions, pure: enough games -> one training item, a candidate -> one evaluation, a winner -> one promotion."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from hypothesis import event as note_case
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config.sections.pipeline import PipelineSettings
from eventbus.events import (
    ArtifactRef,
    BatchInput,
    EvaluationComplete,
    Event,
    LeaderElected,
    ModelPromoted,
    ModelRated,
    SelfplayComplete,
    TrainingComplete,
    WorkAdded,
    WorkAssigned,
    WorkCompleted,
    WorkFailed,
    WorkHandedBack,
    WorkStarted,
)
from projections.pmap import enc_hook
from services.leader.pipeline import decide
from services.leader.pipeline_view import PipelineView, apply
from tests.event_samples import SAMPLE_TIME
from tests.terms import TERM, decided, in_term
from workload.ratings import anchor_id

SETTINGS = PipelineSettings(min_new_samples=1000, evaluation_games=10)
ANCHOR = anchor_id("hex8", 2, SETTINGS.evaluation_sims)  # the first generation's gate opponent


def fold(events: Iterable[Event], view: PipelineView | None = None) -> PipelineView:
    events = in_term(events) if view is None else [decided(e) for e in events]
    view = view or PipelineView()
    for event in events:
        view = apply(view, event, view.last_seq + 1)
    return view


def batch(n: int, samples: int = 600, board: str = "hex8") -> SelfplayComplete:
    return SelfplayComplete(
        batch_id=f"b{n}", work_id=f"sp{n}", node="n1", board_type=board, num_players=2, num_games=10,
        num_samples=samples, data=ArtifactRef(path=f"/data/b{n}.npz", size_bytes=100, sha256=f"s{n}"),
    )


def trained(item: WorkAdded, sha: str = "abc") -> TrainingComplete:
    return TrainingComplete(
        model_id=str(item.params["model_id"]), work_id=item.work_id, node="n1", board_type=item.board_type,
        num_players=item.num_players, checkpoint=ArtifactRef(path=f"/out/{item.work_id}.pth", size_bytes=7, sha256=sha),
    )


def evaluated(model_id: str, opponent: str, wins: int, losses: int, work_id: str = "", draws: int = 0) -> EvaluationComplete:
    games = wins + losses + draws
    return EvaluationComplete(
        model_id=model_id, work_id=work_id or f"eval-{model_id}", node="n1", opponent=opponent, games=games,
        wins=wins, losses=losses, draws=draws, win_rate=(wins + draws / 2) / games,
    )


def ran(work_id: str) -> list[Event]:
    """An item's attempt assigned and completed: the work fold closes an item only through an attempt."""
    return [WorkAssigned(work_id=work_id, node="n1", attempt=1, deadline=SAMPLE_TIME, epoch=1),
            WorkCompleted(work_id=work_id, node="n1", attempt=1)]


def only(events: list[Event], kind: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


def test_too_few_samples_decide_nothing() -> None:
    assert decide(fold([batch(1)]), SETTINGS) == []


def test_enough_new_samples_add_exactly_one_training_item_with_the_batch_paths() -> None:
    view = fold([batch(1), batch(2)])
    [item] = decide(view, SETTINGS)
    assert isinstance(item, WorkAdded) and item.work_type == "training"
    assert (item.board_type, item.num_players) == ("hex8", 2)
    assert item.inputs == [BatchInput(batch_id="b1", path="/data/b1.npz"), BatchInput(batch_id="b2", path="/data/b2.npz")]
    assert "data" not in item.params and "input_batches" not in item.params
    assert "parent_model" not in item.params


def test_a_pending_training_item_holds_back_the_next_one() -> None:
    view = fold([batch(1), batch(2)])
    [item] = decide(view, SETTINGS)
    view = fold([item, batch(3), batch(4)], view)
    assert decide(view, SETTINGS) == []


def test_samples_already_trained_on_do_not_count_again_but_a_failed_training_frees_them() -> None:
    view = fold([batch(1), batch(2)])
    [item] = decide(view, SETTINGS)
    done = fold([item, *ran(item.work_id)], view)
    assert decide(done, SETTINGS) == []
    failed = fold([item, WorkFailed(work_id=item.work_id, reason="oom")], view)
    [again] = decide(failed, SETTINGS)
    assert again.work_id != item.work_id


def test_a_training_complete_adds_one_evaluation_item() -> None:
    view = fold([batch(1), batch(2)])
    [item] = decide(view, SETTINGS)
    view = fold([item, trained(item)], view)
    [evaluation] = only(decide(view, SETTINGS), WorkAdded)
    assert evaluation.work_type == "evaluation" and evaluation.num_games == 10
    assert evaluation.params["candidate"] == f"/out/{item.work_id}.pth"
    assert evaluation.params["model_id"] == item.params["model_id"]
    view = fold([evaluation], view)
    assert decide(view, SETTINGS) == []


def candidate_view() -> tuple[PipelineView, str]:
    view = fold([batch(1), batch(2)])
    [item] = decide(view, SETTINGS)
    view = fold([item, trained(item), *ran(item.work_id)], view)
    [evaluation] = decide(view, SETTINGS)
    return fold([evaluation], view), str(item.params["model_id"])


def test_the_first_candidate_the_sprt_shows_stronger_than_the_anchor_is_promoted_once_as_generation_one() -> None:
    view, model = candidate_view()
    view = fold([evaluated(model, ANCHOR, 30, 5)], view)
    [promoted] = decide(view, SETTINGS)
    assert isinstance(promoted, ModelPromoted)
    assert (promoted.model_id, promoted.generation, promoted.previous_model) == (model, 1, None)
    assert promoted.sha256 == "abc" and promoted.size_bytes == 7
    assert promoted.evaluation_work_id == f"eval-{model}"
    assert "SPRT accepted H1" in promoted.reason and f"vs {ANCHOR}: 30-5-0 in 35 games" in promoted.reason
    assert decide(fold([promoted], view), SETTINGS) == []


def test_beating_random_play_promotes_nothing() -> None:
    view, model = candidate_view()
    assert decide(fold([evaluated(model, "random", 40, 0)], view), SETTINGS) == []


def test_a_high_win_rate_the_sprt_has_not_decided_is_not_promoted() -> None:
    view, model = candidate_view()
    assert decide(fold([evaluated(model, ANCHOR, 8, 2)], view), SETTINGS) == []  # 80%, but 10 games prove nothing
    assert decide(fold([evaluated(model, ANCHOR, 90, 60, draws=50)], view), SETTINGS) == []  # cut off undecided


def test_the_gate_follows_its_configured_hypotheses() -> None:
    view, model = candidate_view()
    view = fold([evaluated(model, ANCHOR, 30, 5)], view)
    strict = msgspec.structs.replace(SETTINGS, gate=msgspec.structs.replace(SETTINGS.gate, elo0=200.0, elo1=300.0))
    assert decide(view, strict) == []  # 30-5 is ~+300 Elo: not enough to accept "at least 300" over "at most 200"


def promote_first() -> tuple[PipelineView, str]:
    view, model = candidate_view()
    view = fold([evaluated(model, ANCHOR, 40, 2)], view)
    [promoted] = decide(view, SETTINGS)
    return fold([promoted, *ran(f"eval-{model}")], view), model


def second_candidate(view: PipelineView) -> tuple[PipelineView, str]:
    view = fold([batch(10), batch(11)], view)
    [item] = decide(view, SETTINGS)
    assert item.params["parent_model"] == next(iter(view.best.values())).model_id
    view = fold([item, *ran(item.work_id), trained(item, sha="def")], view)
    [evaluation] = decide(view, SETTINGS)
    return fold([evaluation], view), str(item.params["model_id"])


def test_a_later_candidate_must_beat_the_current_best_and_becomes_the_next_generation() -> None:
    view, first = promote_first()
    view, second = second_candidate(view)
    assert decide(fold([evaluated(second, "random", 40, 0)], view), SETTINGS) == []  # random is not the bar now
    assert decide(fold([evaluated(second, ANCHOR, 40, 0)], view), SETTINGS) == []  # nor the anchor
    assert decide(fold([evaluated(second, first, 25, 25)], view), SETTINGS) == []
    [promoted] = decide(fold([evaluated(second, first, 40, 10)], view), SETTINGS)
    assert isinstance(promoted, ModelPromoted)
    assert (promoted.generation, promoted.previous_model, promoted.sha256) == (2, first, "def")


def test_promotion_is_idempotent_across_refolds() -> None:
    view, first = promote_first()
    view, second = second_candidate(view)
    view = fold([evaluated(second, first, 40, 10)], view)
    [promoted] = decide(view, SETTINGS)
    log = [promoted, evaluated(second, first, 45, 5)]  # a second evaluation changes nothing once promoted
    assert decide(fold(log, view), SETTINGS) == []
    assert decide(fold(log, fold(log, view)), SETTINGS) == []


def test_a_candidate_older_than_the_best_is_never_promoted() -> None:
    view, first = promote_first()
    view, second = second_candidate(view)
    view = fold([ModelPromoted(model_id=second, board_type="hex8", num_players=2, sha256="def", generation=2)], view)
    # `first` (older than the best) scores well again: still not promoted
    assert decide(fold([evaluated(first, second, 45, 5)], view), SETTINGS) == []


def test_a_promotion_by_a_superseded_leader_takes_no_effect() -> None:
    from eventbus.events import LeaderElected
    view, model = candidate_view()
    view = fold([LeaderElected(role="scheduler", node="a", epoch=1), LeaderElected(role="scheduler", node="b", epoch=2),
                 ModelPromoted(model_id=model, board_type="hex8", num_players=2, sha256="abc", generation=1, epoch=1),
                 evaluated(model, ANCHOR, 30, 5)], view)
    assert [e.model_id for e in only(decide(view, SETTINGS), ModelPromoted)] == [model]  # type: ignore[attr-defined]


def assigned_to(work_id: str, attempt: int, node: str) -> WorkAssigned:
    return WorkAssigned(work_id=work_id, node=node, attempt=attempt, deadline=SAMPLE_TIME, epoch=1)


def test_a_late_result_of_a_superseded_attempt_changes_no_pipeline_decision() -> None:
    view, model = candidate_view()
    work_id = f"eval-{model}"
    view = fold([LeaderElected(role="scheduler", node="s", epoch=1),
                 assigned_to(work_id, 1, "n1"), assigned_to(work_id, 2, "n2")], view)
    current = msgspec.structs.replace(evaluated(model, ANCHOR, 5, 30, work_id), node="n2", attempt=2)
    late = msgspec.structs.replace(evaluated(model, ANCHOR, 30, 5, work_id), node="n1", attempt=1)
    scored = fold([current], view)
    after_late = fold([late], scored)
    assert decide(after_late, SETTINGS) == decide(scored, SETTINGS) == []  # the current attempt lost, the winning report came too late
    assert after_late.scores == scored.scores
    [anomaly] = after_late.anomalies
    assert anomaly.type == "EVALUATION_COMPLETE" and "late result of" in anomaly.reason and "attempt 2 on n2 is current" in anomaly.reason
    # The same report from the current attempt would have promoted the model.
    [promoted] = decide(fold([msgspec.structs.replace(late, node="n2", attempt=2)], view), SETTINGS)
    assert isinstance(promoted, ModelPromoted)


def test_a_handed_back_attempts_result_counts_until_a_newer_attempt_starts_as_its_completion_does() -> None:
    view, model = candidate_view()
    work_id = f"eval-{model}"
    handed_back = fold([LeaderElected(role="scheduler", node="s", epoch=1), assigned_to(work_id, 1, "n1"),
                        WorkHandedBack(work_id=work_id, node="n1", attempt=1, reason="worker stopped"),
                        assigned_to(work_id, 2, "n2")], view)
    result = msgspec.structs.replace(evaluated(model, ANCHOR, 30, 5, work_id), node="n1", attempt=1)
    # Attempt 2 is assigned but not started: attempt 1 may still complete the item (projections/work.py).
    assert only(decide(fold([result], handed_back), SETTINGS), ModelPromoted)
    started = fold([WorkStarted(work_id=work_id, node="n2", attempt=2)], handed_back)
    late_view = fold([result], started)
    assert decide(late_view, SETTINGS) == [] and "late result of" in late_view.anomalies[-1].reason


def test_results_written_before_attempts_were_carried_fold_unless_the_item_was_retried() -> None:
    view, model = candidate_view()
    work_id = f"eval-{model}"
    old = evaluated(model, ANCHOR, 30, 5, work_id)  # attempt 0: no attempt on the wire
    once = fold([LeaderElected(role="scheduler", node="s", epoch=1), assigned_to(work_id, 1, "n1")], view)
    assert only(decide(fold([old], once), SETTINGS), ModelPromoted)
    twice = fold([assigned_to(work_id, 2, "n2"), old], once)
    assert decide(twice, SETTINGS) == [] and "which attempt wrote it is unknown" in twice.anomalies[-1].reason
    assert only(decide(fold([old], view), SETTINGS), ModelPromoted), "an item never assigned in this fold is not judged"


# Random logs: batches, evaluations with random scores, and the pipeline's own decisions fed back.
STEP = st.one_of(
    st.tuples(st.just("batch"), st.sampled_from(["hex8", "square8"]), st.integers(300, 1500)),
    st.tuples(st.just("train"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("eval"), st.integers(0, 5), st.floats(0.3, 1.0), st.booleans()),
    st.tuples(st.just("decide"), st.booleans()),
)


@hsettings(max_examples=200, deadline=None)
@given(st.lists(STEP, min_size=20, max_size=80))
def test_random_logs_promote_each_candidate_at_most_once_with_rising_generations(steps: list[tuple]) -> None:
    view, log, n = apply(PipelineView(), TERM, 1), [], 0

    def add(event: Event) -> None:
        nonlocal view
        event = decided(event)  # as the leader's term publishes it
        log.append(event)
        view = apply(view, event, view.last_seq + 1)

    for step in steps:
        n += 1
        if step[0] == "batch":
            add(batch(n, step[2], step[1]))
        elif step[0] == "train":
            items = [e for e in log if isinstance(e, WorkAdded) and e.work_type == "training"]
            if items:
                item = items[-1 - step[1] % len(items)]  # mostly the newest
                if step[2]:
                    add(trained(item, sha=f"h{n}"))
                    for event in ran(item.work_id):
                        add(event)
                else:
                    add(WorkFailed(work_id=item.work_id, reason="x"))
        elif step[0] == "eval":
            candidates = sorted(view.live_candidates(), key=lambda c: c.seq)
            if candidates:
                candidate = candidates[-1 - step[1] % len(candidates)]
                best = view.best.get(candidate.config)
                wins = int(step[2] * 40)
                anchor = anchor_id(candidate.board_type, 2, SETTINGS.evaluation_sims)
                add(evaluated(candidate.model_id, best.model_id if best and step[3] else anchor, wins, 40 - wins))
        if step[0] == "decide" or n % 2:  # the leader decides often, but not after every fact
            for event in decide(view, SETTINGS):
                add(event)
            assert decide(view, SETTINGS) == []  # once folded, nothing is owed twice
    promotions = [e for e in log if isinstance(e, ModelPromoted)]
    ids = [p.model_id for p in promotions]
    note_case(f"promotions: {min(len(ids), 2)}")
    assert len(ids) == len(set(ids))
    generations: dict[str, list[int]] = {}
    for p in promotions:
        generations.setdefault(f"{p.board_type}_{p.num_players}p", []).append(p.generation)
    for gens in generations.values():
        assert gens == sorted(set(gens)) and gens[0] == 1
    encode = msgspec.json.Encoder(enc_hook=enc_hook).encode
    assert encode(fold(log)) == encode(view)  # a rebuild equals the live view


def test_evaluation_and_promotion_continue_the_trace_of_the_training_that_made_the_candidate() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    view = fold([batch(1), batch(2)])
    [item] = decide(view, SETTINGS)
    view = fold([item, msgspec.structs.replace(trained(item), trace=traceparent)], view)
    [evaluation] = only(decide(view, SETTINGS), WorkAdded)
    assert evaluation.trace == traceparent
    view = fold([evaluation, evaluated(str(item.params["model_id"]), ANCHOR, 40, 2)], view)
    [promoted] = decide(view, SETTINGS)
    assert isinstance(promoted, ModelPromoted) and promoted.trace == traceparent


def test_evaluation_items_carry_the_gate_and_ask_for_the_anchor_games_until_the_anchor_is_rated() -> None:
    view = fold([batch(1), batch(2)])
    [item] = decide(view, SETTINGS)
    view = fold([item, trained(item)], view)
    [evaluation] = only(decide(view, SETTINGS), WorkAdded)
    gate = SETTINGS.gate
    assert {k: evaluation.params[k] for k in ("sims", "elo0", "elo1", "alpha", "beta", "max_games", "rate_anchor")} == {
        "sims": 16, "elo0": gate.elo0, "elo1": gate.elo1, "alpha": gate.alpha, "beta": gate.beta,
        "max_games": gate.max_games, "rate_anchor": True}
    rated = fold([ModelRated(model_id=ANCHOR, board_type="hex8", num_players=2, elo=600.0, interval=80.0)], view)
    [again] = only(decide(rated, SETTINGS), WorkAdded)
    assert again.params["rate_anchor"] is False


def rated(events: list[Event]) -> dict[str, ModelRated]:
    return {e.model_id: e for e in events if isinstance(e, ModelRated)}


def test_the_anchor_is_rated_once_from_its_games_against_random_and_each_candidate_on_the_same_scale() -> None:
    view, model = candidate_view()
    work = f"eval-{model}"
    view = fold([evaluated(model, ANCHOR, 30, 5), evaluated(model, "random", 20, 0),
                 evaluated(ANCHOR, "random", 19, 1, work_id=work)], view)
    decided = decide(view, SETTINGS)
    anchor = rated(decided)[ANCHOR]
    assert anchor.kind == "anchor" and anchor.opponents == ["random"] and anchor.games == 20
    assert 300 < anchor.elo < 700 and anchor.interval > 50  # 19-1 against random: strong, and uncertain
    assert model not in rated(decided)  # its evaluation has not completed yet
    view = fold([*decided, *ran(work)], view)
    [candidate] = rated(decide(view, SETTINGS)).values()
    assert candidate.kind == "candidate" and candidate.opponents == [ANCHOR, "random"]
    assert candidate.elo > anchor.elo + 100  # it beat the anchor 30-5
    assert candidate.interval > anchor.interval  # the anchor's uncertainty carries over
    view = fold([candidate], view)
    assert decide(view, SETTINGS) == []  # rated once
    assert decide(fold([*decided, candidate], view), SETTINGS) == []


def test_a_later_generation_is_rated_against_the_anchor_and_its_predecessor() -> None:
    view, first = promote_first()
    view = fold([ModelRated(model_id=ANCHOR, board_type="hex8", num_players=2, elo=500.0, interval=60.0),
                 ModelRated(model_id=first, board_type="hex8", num_players=2, elo=800.0, interval=90.0)], view)
    view, second = second_candidate(view)
    view = fold([evaluated(second, first, 40, 10), evaluated(second, "random", 20, 0),
                 evaluated(second, ANCHOR, 19, 1), *ran(f"eval-{second}")], view)
    decided = decide(view, SETTINGS)
    [rating] = rated(decided).values()
    assert rating.opponents == sorted([ANCHOR, first, "random"])
    assert rating.elo > 800 and rating.interval > 90
    assert [e.model_id for e in only(decided, ModelPromoted)] == [second]
