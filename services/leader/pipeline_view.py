"""What the pipeline leader knows, folded purely from the log: data batches, open items, candidates, bests.

The general projections (projections/) keep what operators read; this fold keeps only what the
pipeline decides on, including what they drop (batch paths, evaluation results per opponent).
Which items are open, and what each is, it reads from the shared work fold it carries
(projections/work.py), not from a lifecycle of its own; which models are candidates, and what
each training wrote, from the shared models fold it carries (projections/models.py). Its maps are persistent
(projections/pmap.py): an event costs what it changes, not a copy of every map.
Only the current attempt's results count (projections/attempts.py): a late result of a
superseded attempt is recorded as an anomaly and decides nothing.
"""

from __future__ import annotations

import msgspec

from eventbus.events import (
    INPUT_PATH_MAX,
    EvaluationComplete,
    Event,
    LeaderElected,
    LeaseWritten,
    ModelPromoted,
    ModelRated,
    OutputsQuarantined,
    QuarantineLifted,
    SelfplayComplete,
    WorkAdded,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
)
from projections import attempts as attempt_rule
from projections import models, taint, withdrawal, work
from projections.attempts import Attempts, late
from projections.base import Anomaly, rejected, total
from projections.fence import Fence, screen
from projections.models import ModelInfo, Training
from projections.pmap import PMap
from projections.taint import Tainted, TaintState
from projections.withdrawal import Withdrawals
from projections.work import WorkItem
from services.leader.backoff import Streak
from services.leader.policy import config_key


class BatchRef(msgspec.Struct, frozen=True, kw_only=True):
    """One selfplay batch a training item can read."""

    batch_id: str
    board_type: str
    num_players: int
    path: str  # on the node that wrote it (local paths: fine on a one-node cluster)
    samples: int
    seq: int
    work_id: str = ""  # the selfplay item that wrote it


class TrainingRead(msgspec.Struct, frozen=True, kw_only=True):
    """How far into its config's batches a training item read."""

    config: str
    through: int  # seq of the newest batch it was given


class Score(msgspec.Struct, frozen=True, kw_only=True):
    """One evaluation result of a candidate against one opponent."""

    opponent: str
    win_rate: float
    games: int
    work_id: str
    wins: int = 0
    losses: int = 0
    draws: int = 0


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A trained model waiting for (or past) its evaluation and promotion decision.

    Built when read (`PipelineView.live_candidates`), never folded: the model's facts are the models
    projection's Training, its evaluation the view's own record keyed by model id.
    """

    model_id: str
    config: str
    board_type: str
    num_players: int
    path: str
    sha256: str
    size_bytes: int
    seq: int  # of its TRAINING_COMPLETE: newer candidates have larger ones
    evaluation_added: bool = False  # an evaluation item about it was added
    evaluated: bool = False  # one of its evaluation items completed: every match it played is in `scores`
    scores: tuple[Score, ...] = ()
    work_id: str = ""  # the training item that made it
    trace: str | None = None  # its TRAINING_COMPLETE's trace: evaluation and promotion continue it


class Best(msgspec.Struct, frozen=True, kw_only=True):
    """The promoted model of a config."""

    model_id: str
    generation: int
    trained_seq: int  # its candidate's TRAINING_COMPLETE seq (0 when unknown)


class RatingRef(msgspec.Struct, frozen=True, kw_only=True):
    """A player's rating on its config's scale, as MODEL_RATED recorded it."""

    elo: float
    interval: float


class AnchorGames(msgspec.Struct, frozen=True, kw_only=True):
    """The pure-search anchor's games against random play, which rate it once."""

    board_type: str
    num_players: int
    score: Score


class PipelineView(msgspec.Struct, frozen=True, kw_only=True):
    """The pipeline's state at stream position `last_seq`."""

    last_seq: int = 0
    # config -> its batches by seq: adding one costs a map update, not a copy of the config's list
    batches: PMap[str, PMap[int, BatchRef]] = msgspec.field(default_factory=PMap)
    # training work id -> what it read; failed ones are forgotten
    training_reads: PMap[str, TrainingRead] = msgspec.field(default_factory=PMap)
    trainings_added: PMap[str, int] = msgspec.field(default_factory=PMap)  # config -> training items ever added
    work: work.WorkState = msgspec.field(default_factory=work.WorkState)  # the items: which are open, what each is
    evaluations: PMap[str, tuple[str, ...]] = msgspec.field(default_factory=PMap)  # model id -> its evaluation items
    models: models.ModelsState = msgspec.field(default_factory=models.ModelsState)  # the trainings: which are candidates
    scores: PMap[str, tuple[Score, ...]] = msgspec.field(default_factory=PMap)  # model id -> results while a candidate
    best: PMap[str, Best] = msgspec.field(default_factory=PMap)  # config -> promoted model
    promoted: frozenset[str] = frozenset()  # every model id ever promoted
    batch_seq: PMap[str, int] = msgspec.field(default_factory=PMap)  # batch id -> seq, to find how far a training item read
    # config -> its training items failed in a row (pipeline.training_backoff)
    training_failures: PMap[str, Streak] = msgspec.field(default_factory=PMap)
    anchor_games: PMap[str, AnchorGames] = msgspec.field(default_factory=PMap)  # anchor id -> its newest games against random play
    ratings: PMap[str, RatingRef] = msgspec.field(default_factory=PMap)  # model or anchor id -> its rating (MODEL_RATED)
    fence: Fence = msgspec.field(default_factory=Fence)  # decisions of superseded leaders take no effect
    withdrawals: Withdrawals = msgspec.field(default_factory=Withdrawals)  # items whose results do not count
    taint: TaintState = msgspec.field(default_factory=TaintState)  # quarantines: tainted batches and models do not count
    attempts: Attempts = msgspec.field(default_factory=Attempts)  # results of other attempts take no effect
    anomalies: tuple[Anomaly, ...] = ()  # events whose application failed (projections.base.total)
    anomaly_count: int = 0

    def live_batches(self, config: str) -> tuple[BatchRef, ...]:
        """The config's batches that count (their selfplay item did not end failed or cancelled, not tainted), oldest first."""
        tainted = self.tainted().batches
        batches = self.batches.get(config, PMap())
        return tuple(b for _, b in sorted(batches.items()) if self.withdrawals.counts(b.work_id) and b.batch_id not in tainted)

    def live_candidates(self) -> list[Candidate]:
        """Candidates whose training item counts and that are not tainted, each with only the scores of evaluations
        that count (not withdrawn, not tainted)."""
        counts, tainted = self.withdrawals.counts, self.tainted()
        out: list[Candidate] = []
        for model in self.models.models.values():
            training = model.training
            if training is None or training.checkpoint is None or not counts(training.work_id) or model.model_id in tainted.models:
                continue
            scores = tuple(s for s in self.scores.get(model.model_id, ()) if counts(s.work_id) and s.work_id not in tainted.evaluations)
            out.append(self._candidate(model, training, scores))
        return out

    def _candidate(self, model: ModelInfo, training: Training, scores: tuple[Score, ...]) -> Candidate:
        checkpoint = training.checkpoint
        assert checkpoint is not None
        evaluations = self.evaluations.get(model.model_id, ())
        evaluated = any(item.status is work.WorkStatus.COMPLETED for w in evaluations if (item := self.work.items.get(w)))
        return Candidate(
            model_id=model.model_id, config=config_key(model.board_type, model.num_players), board_type=model.board_type,
            num_players=model.num_players, path=checkpoint.path, sha256=checkpoint.sha256, size_bytes=checkpoint.size_bytes,
            seq=training.seq, evaluation_added=bool(evaluations), evaluated=evaluated, scores=scores,
            work_id=training.work_id, trace=training.trace,
        )

    def open_items(self) -> list[WorkItem]:
        """The work items not yet completed, failed or cancelled."""
        return [item for item in self.work.items.values() if work.is_open(item)]

    def tainted(self) -> Tainted:
        """What the quarantines in force taint."""
        return taint.tainted(self.taint)

    @property
    def trained_through(self) -> dict[str, int]:
        """Config -> seq of the newest batch a training item (not failed or cancelled) was given."""
        out: dict[str, int] = {}
        for read in self.training_reads.values():
            out[read.config] = max(out.get(read.config, 0), read.through)
        return out


def _replace(view: PipelineView, seq: int, **changes: object) -> PipelineView:
    return msgspec.structs.replace(view, last_seq=max(view.last_seq, seq), **changes)


def _selfplay(view: PipelineView, e: SelfplayComplete, seq: int) -> PipelineView:
    if e.data is None or e.batch_id in view.batch_seq:
        return _replace(view, seq)
    if len(e.data.path) > INPUT_PATH_MAX:  # a training naming it would be refused, and with it every later batch
        return rejected(view, seq, e, f"batch path of {len(e.data.path)} characters is longer than a training input may "
                                      f"name ({INPUT_PATH_MAX}); it is never trained on: shorten worker.data_dir")
    config = config_key(e.board_type, e.num_players)
    batch = BatchRef(batch_id=e.batch_id, board_type=e.board_type, num_players=e.num_players, path=e.data.path,
                     samples=e.num_samples, seq=seq, work_id=e.work_id)
    return _replace(view, seq, batches=view.batches.set(config, view.batches.get(config, PMap()).set(seq, batch)),
                    batch_seq=view.batch_seq.set(e.batch_id, seq))


def _work_added(view: PipelineView, e: WorkAdded, seq: int) -> PipelineView:
    item = view.work.items.get(e.work_id)
    if item is None or item.added_seq != seq:  # the work fold refused it (an id added before): nothing new
        return _replace(view, seq)
    changes: dict[str, object] = {}
    if e.work_type == "training":
        read = [view.batch_seq.get(b, 0) for b in e.input_batch_ids()]  # `inputs`, or params on older items
        changes["training_reads"] = view.training_reads.set(e.work_id, TrainingRead(config=item.config, through=max([0, *read])))
        changes["trainings_added"] = view.trainings_added.set(item.config, view.trainings_added.get(item.config, 0) + 1)
    if e.work_type == "evaluation" and item.model_id:
        changes["evaluations"] = view.evaluations.set(item.model_id, (*view.evaluations.get(item.model_id, ()), e.work_id))
    return _replace(view, seq, **changes)


def _work_ended(view: PipelineView, event: WorkCompleted | WorkFailed | WorkCancelled, seq: int,
                item: WorkItem | None) -> PipelineView:
    """`item` is the item as it was before the event; the end counts when it closed the item (the work fold took it)."""
    if not work.is_open(item) or work.is_open(view.work.items.get(event.work_id)):
        return _replace(view, seq)
    assert item is not None
    succeeded = isinstance(event, WorkCompleted)
    changes: dict[str, object] = {}
    if not succeeded and event.work_id in view.training_reads:  # its batches are new again for the next item
        changes["training_reads"] = view.training_reads.remove(event.work_id)
    if item.work_type == "training" and not isinstance(event, WorkCancelled):
        failures = view.training_failures.remove(item.config) if item.config in view.training_failures else view.training_failures
        if isinstance(event, WorkFailed):
            before = view.training_failures.get(item.config, Streak())
            failures = failures.set(item.config, Streak(failed=before.failed + 1, last_failed_at=event.ts, last_seq=seq))
        changes["training_failures"] = failures
    return _replace(view, seq, **changes)


def _trained(view: PipelineView, model_id: str) -> Training | None:
    """The model's training when it is a candidate (its training reported a checkpoint), as the models fold has it."""
    model = view.models.models.get(model_id)
    training = model.training if model is not None else None
    return training if training is not None and training.checkpoint is not None else None


def _evaluation(view: PipelineView, e: EvaluationComplete, seq: int) -> PipelineView:
    score = Score(opponent=e.opponent, win_rate=e.win_rate, games=e.games, work_id=e.work_id, wins=e.wins,
                  losses=e.losses, draws=e.draws)
    if _trained(view, e.model_id) is None:
        item = view.work.items.get(e.work_id)
        if e.opponent == "random" and work.is_open(item):  # the newest: a withdrawn one is not rated
            assert item is not None
            games = AnchorGames(board_type=item.board_type, num_players=item.num_players, score=score)
            return _replace(view, seq, anchor_games=view.anchor_games.set(e.model_id, games))
        return _replace(view, seq)
    return _replace(view, seq, scores=view.scores.set(e.model_id, (*view.scores.get(e.model_id, ()), score)))


def _promoted(view: PipelineView, e: ModelPromoted, seq: int) -> PipelineView:
    config = config_key(e.board_type, e.num_players)
    training = _trained(view, e.model_id)
    best = Best(model_id=e.model_id, generation=e.generation, trained_seq=training.seq if training else 0)
    return _replace(view, seq, best=view.best.set(config, best), promoted=view.promoted | {e.model_id})


def _rated(view: PipelineView, e: ModelRated, seq: int) -> PipelineView:
    return _replace(view, seq, ratings=view.ratings.set(e.model_id, RatingRef(elo=e.elo, interval=e.interval)))


_RESULTS = (SelfplayComplete, EvaluationComplete)  # domain results: the current attempt's only (the models fold judges trainings)
_WORK_READS = work.PROJECTION.reads
_MODELS_READS = models.PROJECTION.reads


@total
def apply(view: PipelineView, event: Event, seq: int) -> PipelineView:
    """The view after one event at stream position `seq` (events it does not read only move the position)."""
    if event.type_name() in taint.READS:  # the lineage and the quarantines: facts, never fenced
        view = msgspec.structs.replace(view, taint=taint.apply(view.taint, event, seq))
        if isinstance(event, (OutputsQuarantined, QuarantineLifted)):
            return msgspec.structs.replace(view, last_seq=seq)
    before = None
    if event.type_name() in _WORK_READS:  # the items' lifecycle, the shared fold's (it fences on its own)
        before = view.work.items.get(getattr(event, "work_id", ""))
        view = msgspec.structs.replace(view, work=work.apply(view.work, event, seq))
    if event.type_name() in _MODELS_READS:  # the trainings and their checkpoints, the shared fold's (it fences on its own)
        view = msgspec.structs.replace(view, models=models.apply(view.models, event, seq))
    view, admitted = screen(view, event, seq)
    if not admitted:
        return view
    if event.type_name() in attempt_rule.READS:  # which attempts may still report
        view = _replace(view, seq, attempts=attempt_rule.learned(view.attempts, view.fence.view, event, seq))
        if not isinstance(event, WorkCompleted):
            return view
    if isinstance(event, _RESULTS):
        problem = late(view.attempts, event.work_id, event.attempt, event.node)
        if problem is not None:
            return rejected(view, max(view.last_seq, seq), event, problem)
    if isinstance(event, SelfplayComplete):
        return _selfplay(view, event, seq)
    if isinstance(event, WorkAdded):
        return _work_added(view, event, seq)
    if isinstance(event, (WorkCompleted, WorkFailed, WorkCancelled)):
        view = msgspec.structs.replace(view, withdrawals=withdrawal.apply(view.withdrawals, event))
        return _work_ended(view, event, seq, before)
    if isinstance(event, EvaluationComplete):
        return _evaluation(view, event, seq)
    if isinstance(event, ModelPromoted):
        return _promoted(view, event, seq)
    if isinstance(event, ModelRated):
        return _rated(view, event, seq)
    return _replace(view, seq)


READS = frozenset(t.type_name() for t in (
    SelfplayComplete, WorkAdded, WorkCompleted, WorkFailed, WorkCancelled, EvaluationComplete,
    ModelPromoted, ModelRated, LeaderElected, LeaseWritten, OutputsQuarantined, QuarantineLifted,
)) | attempt_rule.READS | _WORK_READS | _MODELS_READS
