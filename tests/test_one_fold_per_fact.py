"""One fold per fact: the widened shared projections answer what the copies they replaced answered.

Each copy that was removed is kept here, verbatim, as the oracle: the same random events are
folded by it and by the shared projection, and every answer a reader took from the copy must come
out of the projection the same. Where the copy took an event that the shared fold refuses (a
duplicate assignment, a failure report the work fold rejects), the two may differ and the shared
fold is the one that counts: those histories are told apart and checked on what they share.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus import events as ev
from projections import models, taint, work
from projections.attempts import late
from projections.base import fold_events
from projections.fence import screen
from projections.pmap import PMap
from projections.snapshot import decode_snapshot, encode_snapshot
from services.leader import pipeline_view, queue
from tests.terms import TERM, decided

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ITEMS = ("w1", "w2")
NODES = ("a", "b")


# ---- the removed copy: services/leader/supervision.Track, as it was ------------------------


class Track(msgspec.Struct, frozen=True, kw_only=True):
    last_seq: int = 0
    target_node: str | None = None
    deadline: dt.datetime | None = None
    outcomes: tuple[ev.AttemptOutcome, ...] = ()
    failed_at: dt.datetime | None = None


def tracked(track: Track | None, item: work.WorkItem | None, event: ev.Event, seq: int) -> Track:
    track = track or Track()
    changes: dict[str, object] = {"last_seq": seq}
    if isinstance(event, ev.WorkAdded) and track.last_seq == 0:
        changes["target_node"] = event.target_node
    elif isinstance(event, ev.WorkAssigned) and item is not None and (item.attempt, item.node) == (event.attempt, event.node):
        changes["deadline"] = event.deadline
    elif isinstance(event, ev.WorkAttemptFailed) and all(o.attempt != event.attempt for o in track.outcomes):
        if item is not None and item.attempt == event.attempt:
            outcome = ev.AttemptOutcome(attempt=event.attempt, node=event.node, reason=event.reason)
            changes["outcomes"] = (*track.outcomes, outcome)
            changes["failed_at"] = event.ts
    return msgspec.structs.replace(track, **changes)


# ---- random item histories ---------------------------------------------------------------------

_item = st.sampled_from(ITEMS)
_node = st.sampled_from(NODES)
_attempt = st.integers(1, 3)
_ts = st.integers(0, 10_000).map(lambda s: T0 + dt.timedelta(seconds=s))
_epoch = st.sampled_from([1, 1, 1, 7])  # 7: a term no election announced, which the fence refuses

_events = st.one_of(
    st.builds(lambda w, n, ts: ev.WorkAdded(work_id=w, work_type="selfplay", board_type="hex8", num_players=2,
                                         target_node=n, ts=ts), _item, st.none() | _node, _ts),
    st.builds(lambda w, n, a, d, ts, e: decided(ev.WorkAssigned(work_id=w, node=n, attempt=a, deadline=d, ts=ts), e),
              _item, _node, _attempt, _ts, _ts, _epoch),
    st.builds(lambda w, n, a, ts: ev.WorkStarted(work_id=w, node=n, attempt=a, ts=ts), _item, _node, _attempt, _ts),
    st.builds(lambda w, n, a, ts: ev.WorkProgress(work_id=w, node=n, attempt=a, fraction=0.5, ts=ts), _item, _node, _attempt, _ts),
    st.builds(lambda w, n, a, r, ts: ev.WorkAttemptFailed(work_id=w, node=n, attempt=a, reason=r, ts=ts),
              _item, _node, _attempt, st.sampled_from(["exit 1", "deadline passed"]), _ts),
    st.builds(lambda w, n, a, ts: decided(ev.WorkHandedBack(work_id=w, node=n, attempt=a, reason="node gone", ts=ts)),
              _item, _node, _attempt, _ts),
    st.builds(lambda w, n, a, ts: ev.WorkCompleted(work_id=w, node=n, attempt=a, ts=ts), _item, _node, _attempt, _ts),
    st.builds(lambda w, ts: decided(ev.WorkFailed(work_id=w, reason="gave up", ts=ts)), _item, _ts),
    st.builds(lambda w, ts: ev.WorkCancelled(work_id=w, reason="operator", ts=ts), _item, _ts),
)


def _refused_kinds(state: work.WorkState, work_id: str) -> set[str]:
    """Types of the item's events the work fold recorded as anomalies or its fence dropped."""
    return {a.type for a in state.anomalies if a.about == work_id} | {
        d.type for d in state.fence.last_dropped if d.about == work_id}


@settings(max_examples=300, deadline=None)
@given(events=st.lists(_events, max_size=30))
def test_the_work_item_answers_what_the_supervision_track_answered(events: list[ev.Event]) -> None:
    state = queue.apply(queue.QueueState(), TERM, 0)
    tracks: dict[str, Track] = {}
    first: dict[str, str] = {}  # work id -> type of its first event
    for seq, event in enumerate(events, start=1):
        state = queue.apply(state, event, seq)
        work_id: str = event.work_id  # type: ignore[attr-defined]
        first.setdefault(work_id, event.type_name())
        tracks[work_id] = tracked(tracks.get(work_id), state.work.items.get(work_id), event, seq)
    for work_id, track in tracks.items():
        # The precondition of the next decision: the item's newest event, applied or not.
        assert queue.expected_seq(state, work_id) == track.last_seq
        item = state.work.items.get(work_id)
        if item is None:
            continue  # never added: no reader asks
        refused = _refused_kinds(state.work, work_id)
        if first[work_id] == "WORK_ADDED":  # the copy took the target only from an item's first event
            assert item.target_node == track.target_node
        if item.status in work.ACTIVE and "WORK_ASSIGNED" not in refused:  # the copy also took a refused or fenced duplicate's
            assert item.deadline == track.deadline
        if "WORK_ATTEMPT_FAILED" not in refused and item.status is not work.WorkStatus.CANCELLED:
            assert (item.outcomes, item.failed_at) == (track.outcomes, track.failed_at)
        assert len(item.outcomes) == item.failures  # one outcome per failed attempt, whatever else came


def test_a_failure_report_the_work_fold_refuses_is_no_outcome_and_no_backoff() -> None:
    # The copy counted it (its attempt was the item's newest) though the item had already moved on:
    # an attempt handed back, then reported failed by its returning worker.
    events: list[ev.Event] = [
        ev.WorkAdded(work_id="w1", work_type="selfplay", board_type="hex8", num_players=2),
        decided(ev.WorkAssigned(work_id="w1", node="a", attempt=1, deadline=T0)),
        decided(ev.WorkHandedBack(work_id="w1", node="a", attempt=1, reason="node a went offline")),
        ev.WorkAttemptFailed(work_id="w1", node="a", attempt=1, reason="killed", ts=T0),
    ]
    state, track = work.apply(work.WorkState(), TERM, 0), None
    for seq, event in enumerate(events, start=1):
        state = work.apply(state, event, seq)
        track = tracked(track, state.items.get("w1"), event, seq)
    item = state.items["w1"]
    assert (item.failures, item.outcomes, item.failed_at) == (0, (), None)
    assert track is not None and len(track.outcomes) == 1  # the copy disagreed with the item's own failure count
    assert state.anomalies[-1].type == "WORK_ATTEMPT_FAILED"


def test_snapshots_of_the_narrower_work_and_queue_shapes_are_refused_and_rebuilt() -> None:
    # Written before the items carried target, deadline and outcomes (work 4, queue 2), or the attempts the
    # log says started and ended (work 5, queue 3): their versions no longer match, so the reader folds
    # from the log rather than half-read an item without them.
    for projection, befores in ((work.PROJECTION, (4, 5)), (queue.PROJECTION, (2, 3))):
        for before in befores:
            old = dataclasses.replace(projection, version=before)
            assert projection.version > before
            assert decode_snapshot(projection, encode_snapshot(old, projection.initial())) is None
    item = work.WorkItem(work_id="w1", work_type="selfplay", board_type="hex8", num_players=2, target_node="a",
                         deadline=T0, outcomes=(ev.AttemptOutcome(attempt=1, node="a", reason="exit 1"),), failed_at=T0,
                         started=((1, "a"),), settled=((1, "a"), (2, "b")), completed_by=(2, "b"))
    state = work.WorkState(last_seq=3, items=work.WorkState().items.set("w1", item))
    loaded = decode_snapshot(work.PROJECTION, encode_snapshot(work.PROJECTION, state))
    assert loaded is not None and loaded.state.items["w1"] == item


# ---- the removed copy: services/distributor/folds.CHECKPOINTS, as it was -------------------------


class CheckpointsState(msgspec.Struct, frozen=True, kw_only=True):
    last_seq: int = 0
    files: PMap[str, ev.ArtifactRef] = msgspec.field(default_factory=PMap)
    at: PMap[str, dt.datetime] = msgspec.field(default_factory=PMap)


def apply_checkpoint(state: CheckpointsState, event: ev.Event, seq: int) -> CheckpointsState:
    if not isinstance(event, ev.TrainingComplete) or event.checkpoint is None:
        return msgspec.structs.replace(state, last_seq=seq)
    ref = event.checkpoint if event.checkpoint.node else msgspec.structs.replace(event.checkpoint, node=event.node)
    at = state.at.set(event.model_id, event.ts) if event.ts is not None else state.at
    return msgspec.structs.replace(state, last_seq=seq, files=state.files.set(event.model_id, ref), at=at)


_checkpoint = st.builds(lambda m, n: ev.ArtifactRef(path=f"/ckpt/{m}.pth", size_bytes=m, sha256=f"{m:064x}", node=n),
                        st.integers(1, 9), st.sampled_from(["", "a", "b"]))
_trainings = st.builds(
    lambda m, n, ref, ts: ev.TrainingComplete(model_id=m, work_id=f"w-{m}", node=n, board_type="hex8", num_players=2,
                                              checkpoint=ref, ts=ts),
    st.sampled_from(["m1", "m2", "m3"]), _node, st.none() | _checkpoint, st.none() | _ts,
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(_trainings, max_size=20))
def test_the_models_training_answers_what_the_distributors_checkpoint_fold_answered(events: list[ev.Event]) -> None:
    # As the distributor folds them: the model aggregate only (no work events, so no attempt is judged late).
    state = fold_events(models.PROJECTION, list(enumerate(events, start=1)))
    copy = CheckpointsState()
    for seq, event in enumerate(events, start=1):
        copy = apply_checkpoint(copy, event, seq)
    newest = {e.model_id: e for e in events if isinstance(e, ev.TrainingComplete)}
    for model_id, event in newest.items():
        model = state.models[model_id]
        if event.checkpoint is None:  # the copy kept an older file; the model says its newest training wrote none
            assert models.checkpoint_of(model) is None
            continue
        assert models.checkpoint_of(model) == copy.files[model_id]
        if event.ts is not None:  # the copy kept an older time for a report without one
            assert model.training is not None and model.training.at == copy.at[model_id]
    assert {m for m in copy.files.keys() if newest[m].checkpoint is not None} == {
        m for m, info in state.models.items() if models.checkpoint_of(info) is not None}


# ---- the removed copy: services/leader/pipeline_view.OpenItem, as it was -------------------------


class OpenItem(msgspec.Struct, frozen=True, kw_only=True):
    work_type: str
    config: str
    model_id: str = ""
    board_type: str = ""
    num_players: int = 0


def open_items_copy(events: list[ev.Event]) -> dict[str, OpenItem]:
    """What the pipeline's own fold held open: every admitted WORK_ADDED until an admitted end of the item."""
    fenced, held = work.WorkState(), {}  # only its fence is used
    for seq, event in enumerate(events, start=1):
        fenced, admitted = screen(fenced, event, seq)
        if not admitted:
            continue
        if isinstance(event, ev.WorkAdded):
            held[event.work_id] = OpenItem(
                work_type=event.work_type, config=f"{event.board_type}_{event.num_players}p",
                model_id=str(event.params.get("model_id") or ""), board_type=event.board_type, num_players=event.num_players)
        elif isinstance(event, (ev.WorkCompleted, ev.WorkFailed, ev.WorkCancelled)):
            held.pop(event.work_id, None)
    return held


_evaluations_added = st.builds(
    lambda w, m, ts: ev.WorkAdded(work_id=w, work_type="evaluation", board_type="square8", num_players=3,
                                  params={"model_id": m}, ts=ts), _item, st.sampled_from(["m1", "m2"]), _ts)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.one_of(_events, _evaluations_added), max_size=30))
def test_the_pipelines_open_items_are_the_work_folds_open_items(events: list[ev.Event]) -> None:
    view = pipeline_view.apply(pipeline_view.PipelineView(), TERM, 0)
    for seq, event in enumerate(events, start=1):
        view = pipeline_view.apply(view, event, seq)
    copy = open_items_copy([TERM, *events])
    now = {i.work_id: OpenItem(work_type=i.work_type, config=i.config, model_id=i.model_id, board_type=i.board_type,
                               num_players=i.num_players) for i in view.open_items()}
    for work_id in ITEMS:
        if _refused_kinds(view.work, work_id) - {"WORK_PROGRESS", "WORK_STARTED", "WORK_ATTEMPT_FAILED", "WORK_HANDED_BACK"}:
            continue  # the work fold refused an assignment, an addition or an end the copy took
        assert now.get(work_id) == copy.get(work_id)


# ---- the removed copy: services/leader/pipeline_view.Candidate's fold of TRAINING_COMPLETE, as it was ------


def candidates_copy(events: list[ev.Event]) -> tuple[pipeline_view.PipelineView, dict[str, pipeline_view.Candidate],
                                                     dict[str, int]]:
    """What the pipeline's own fold held: each model's first reported checkpoint, with its evaluation, and the
    training seq each promotion recorded. The view supplies the work fold and the attempts the copy also read."""
    view, held, trained_seq = pipeline_view.PipelineView(), {}, {}
    for seq, event in enumerate(events, start=1):
        before, item = view, view.work.items.get(getattr(event, "work_id", ""))
        view = pipeline_view.apply(view, event, seq)
        if isinstance(event, (ev.TrainingComplete, ev.EvaluationComplete)) and late(
                before.attempts, event.work_id, event.attempt, event.node) is not None:
            continue
        if isinstance(event, ev.TrainingComplete) and event.checkpoint is not None and event.model_id not in held:
            open_eval = any(work.is_open(before.work.items.get(w)) for w in before.evaluations.get(event.model_id, ()))
            held[event.model_id] = pipeline_view.Candidate(
                model_id=event.model_id, config=f"{event.board_type}_{event.num_players}p", board_type=event.board_type,
                num_players=event.num_players, path=event.checkpoint.path, sha256=event.checkpoint.sha256,
                size_bytes=event.checkpoint.size_bytes, seq=seq, evaluation_added=open_eval, trace=event.trace,
                work_id=event.work_id)
        elif isinstance(event, ev.WorkAdded) and event.work_type == "evaluation":
            added = view.work.items.get(event.work_id)
            if added is not None and added.added_seq == seq and added.model_id in held:
                held[added.model_id] = msgspec.structs.replace(held[added.model_id], evaluation_added=True)
        elif isinstance(event, ev.WorkCompleted) and work.is_open(item) and not work.is_open(view.work.items.get(event.work_id)):
            assert item is not None
            if item.work_type == "evaluation" and item.model_id in held:
                held[item.model_id] = msgspec.structs.replace(held[item.model_id], evaluated=True)
        elif isinstance(event, ev.EvaluationComplete) and event.model_id in held:
            c = held[event.model_id]
            score = pipeline_view.Score(opponent=event.opponent, win_rate=event.win_rate, games=event.games,
                                        work_id=event.work_id, wins=event.wins, losses=event.losses, draws=event.draws)
            held[event.model_id] = msgspec.structs.replace(c, scores=(*c.scores, score))
        elif isinstance(event, ev.ModelPromoted):
            trained_seq[event.model_id] = held[event.model_id].seq if event.model_id in held else 0
    return view, held, trained_seq


_MODELS = ("m1", "m2")
_model = st.sampled_from(_MODELS)
_eval_item = st.sampled_from(("e1", "e2"))
_pipeline_events = st.one_of(
    st.builds(lambda m, n, ref, a, t: ev.TrainingComplete(model_id=m, work_id=f"train-{m}", node=n, board_type="hex8",
                                                          num_players=2, checkpoint=ref, attempt=a, trace=t),
              _model, _node, st.none() | _checkpoint, st.sampled_from([0, 1, 2]), st.sampled_from([None, "00-t1", "00-t2"])),
    st.builds(lambda m: ev.WorkAdded(work_id=f"train-{m}", work_type="training", board_type="hex8", num_players=2,
                                     params={"model_id": m}), _model),
    st.builds(lambda w, m: ev.WorkAdded(work_id=w, work_type="evaluation", board_type="hex8", num_players=2,
                                        params={"model_id": m}), _eval_item, _model),
    st.builds(lambda w, n, a: decided(ev.WorkAssigned(work_id=w, node=n, attempt=a, deadline=T0)),
              _eval_item | _model.map(lambda m: f"train-{m}"), _node, st.sampled_from([1, 2])),
    st.builds(lambda w, n, a: ev.WorkCompleted(work_id=w, node=n, attempt=a),
              _eval_item | _model.map(lambda m: f"train-{m}"), _node, st.sampled_from([1, 2])),
    st.builds(lambda w: decided(ev.WorkFailed(work_id=w, reason="gave up")), _eval_item | _model.map(lambda m: f"train-{m}")),
    st.builds(lambda m, w, n, a, o, wins: ev.EvaluationComplete(model_id=m, work_id=w, node=n, attempt=a, opponent=o,
                                                                games=10, wins=wins, losses=10 - wins),
              _model, _eval_item, _node, st.sampled_from([0, 1, 2]), st.sampled_from(["random", "m1", "anchor"]),
              st.integers(0, 10)),
    st.builds(lambda m, g: decided(ev.ModelPromoted(model_id=m, board_type="hex8", num_players=2, sha256="0" * 64,
                                                    generation=g)), _model, st.integers(1, 3)),
)


def _told_apart(events: list[ev.Event], view: pipeline_view.PipelineView) -> set[str]:
    """Models on which the copy and the models fold may differ, the models fold counting: a model trained
    twice (the copy kept the first report, the models fold keeps the newest), or one with an evaluation
    item added before its training reported (the copy judged it by that item's state at the report)."""
    apart = set()
    for m in _MODELS:
        reports = [s for s, e in enumerate(events, start=1) if isinstance(e, ev.TrainingComplete) and e.model_id == m]
        first_eval = min((view.work.items[w].added_seq for w in view.evaluations.get(m, ())), default=None)
        if len(reports) > 1 or (reports and first_eval is not None and first_eval < reports[0]):
            apart.add(m)
    return apart


@settings(max_examples=400, deadline=None)
@given(events=st.lists(_pipeline_events, max_size=30))
def test_the_pipelines_candidates_are_the_models_trainings_with_the_evaluations_the_copy_held(events: list[ev.Event]) -> None:
    events = [TERM, *events]
    view, held, trained_seq = candidates_copy(events)
    apart = _told_apart(events, view)
    counts = view.withdrawals.counts  # what live_candidates drops: withdrawn trainings and evaluations
    expected = {m: msgspec.structs.replace(c, scores=tuple(s for s in c.scores if counts(s.work_id)))
                for m, c in held.items() if counts(c.work_id) and m not in apart}
    now = {c.model_id: c for c in view.live_candidates() if c.model_id not in apart}
    assert now == expected
    best = view.best.get("hex8_2p")
    if best is not None and best.model_id not in apart:
        assert best.trained_seq == trained_seq[best.model_id]


def test_a_model_trained_twice_is_the_candidate_of_its_newest_report_as_the_distributor_uploads_it() -> None:
    # The copy kept the first report: an evaluator would then have been told a SHA-256 that the
    # models bucket (filled from the models fold's newest checkpoint) did not hold.
    first, second = (ev.ArtifactRef(path="/ckpt/m1.pth", size_bytes=n, sha256=f"{n:064x}") for n in (1, 2))
    events: list[ev.Event] = [
        TERM, ev.TrainingComplete(model_id="m1", work_id="train-m1", node="a", board_type="hex8", num_players=2, checkpoint=first),
        ev.TrainingComplete(model_id="m1", work_id="train-m1", node="a", board_type="hex8", num_players=2, checkpoint=second),
    ]
    view, held, _ = candidates_copy(events)
    [candidate] = view.live_candidates()
    assert (candidate.sha256, candidate.seq) == (second.sha256, 3)
    assert held["m1"].sha256 == first.sha256
    assert models.checkpoint_of(view.models.models["m1"]) == msgspec.structs.replace(second, node="a")


def test_the_pipeline_view_folds_no_training_report_of_its_own() -> None:
    # Its candidates come from the models fold it carries: a TRAINING_COMPLETE changes nothing else in it
    # but the lineage its quarantines read (projections/taint.py, a fact of its own).
    view = pipeline_view.apply(pipeline_view.PipelineView(), TERM, 1)
    report = ev.TrainingComplete(model_id="m1", work_id="train-m1", node="a", board_type="hex8", num_players=2,
                                 checkpoint=ev.ArtifactRef(path="/ckpt/m1.pth", size_bytes=1, sha256="1" * 64), trace="00-t")
    after = pipeline_view.apply(view, report, 2)
    assert after.models == models.apply(view.models, report, 2)
    assert after.taint == taint.apply(view.taint, report, 2)
    assert msgspec.structs.replace(after, models=view.models, taint=view.taint, last_seq=view.last_seq) == view
    assert after.models.models["m1"].training is not None and after.models.models["m1"].training.trace == "00-t"


def test_snapshots_of_the_models_shape_without_the_trace_are_refused_and_rebuilt() -> None:
    old = dataclasses.replace(models.PROJECTION, version=3)
    assert models.PROJECTION.version > 3
    assert decode_snapshot(models.PROJECTION, encode_snapshot(old, models.PROJECTION.initial())) is None

