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
from projections import models, work
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
    # Written before the items carried target, deadline and outcomes: their versions no longer match,
    # so the reader folds from the log rather than half-read an item without them.
    for projection, before in ((work.PROJECTION, 4), (queue.PROJECTION, 2)):
        old = dataclasses.replace(projection, version=before)
        assert projection.version > before
        assert decode_snapshot(projection, encode_snapshot(old, projection.initial())) is None
    item = work.WorkItem(work_id="w1", work_type="selfplay", board_type="hex8", num_players=2, target_node="a",
                         deadline=T0, outcomes=(ev.AttemptOutcome(attempt=1, node="a", reason="exit 1"),), failed_at=T0)
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
