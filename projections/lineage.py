"""Lineage of a model: the selfplay batches and training job behind it, the evaluation that promoted it, where it is."""

from __future__ import annotations

import msgspec

from projections import elo, taint
from projections.bundle import ProjectionSet
from projections.data import Batch, retired_games
from projections.elo import Rating, ScaleRating, scale_rating
from projections.models import Promotion, Training
from projections.taint import Taint


class BatchLine(msgspec.Struct, frozen=True, kw_only=True):
    """One input batch; `known` is False when training named a batch the log never reported."""

    batch_id: str
    known: bool
    batch: Batch | None = None
    retired_games: int = 0  # a settled batch retired from the data fold: only its games are held
    taint: Taint | None = None  # why it is quarantined, when it is


class Lineage(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the log says about where a model came from and where it went."""

    model_id: str
    config: str
    sha256: str
    parent_model: str | None
    training: Training | None
    batches: list[BatchLine]
    games: int  # total games of the known input batches
    evaluations: list[Rating]
    rating: ScaleRating | None  # on its config's Elo scale (random play = 0)
    promotion: Promotion | None
    promoting_evaluation: list[Rating]  # the evaluations of the work item the promotion cites
    promoted_now: bool  # still its config's promoted model
    nodes: list[str]
    distribution_complete: bool
    as_of_seq: int
    taint: Taint | None = None  # why the model is quarantined, when it is
    tainted_evaluations: dict[str, Taint] = {}  # evaluation work id -> why, for the evaluations above that are


def lineage(ps: ProjectionSet, model_id: str) -> Lineage | None:
    """The lineage of `model_id`, None when no event ever named it."""
    model = ps.models.models.get(model_id)
    ratings = list(elo.ratings(ps.elo, model_id))
    if model is None and not ratings:
        return None
    training = model.training if model else None
    batch_ids = training.input_batches if training else ()
    tainted = taint.tainted(ps.taint)
    batches = [BatchLine(batch_id=b, known=b in ps.data.batches or b in ps.data.retired, batch=ps.data.batches.get(b),
                         retired_games=retired_games(ps.data, b) or 0, taint=tainted.batches.get(b))
               for b in batch_ids]
    promotion = model.promotion if model else None
    cited = promotion.evaluation_work_id if promotion else None
    config = model.config if model else ps.elo.configs.get(model_id, "")
    return Lineage(
        model_id=model_id, config=config, sha256=model.sha256 if model else "",
        parent_model=training.parent_model if training else (promotion.previous_model if promotion else None),
        training=training, batches=batches, games=sum(b.batch.num_games if b.batch else b.retired_games for b in batches),
        evaluations=ratings, rating=scale_rating(ps.elo, model_id), promotion=promotion,
        promoting_evaluation=[r for r in ratings if cited is not None and r.work_id == cited],
        promoted_now=bool(config) and ps.models.promoted.get(config) == model_id,
        nodes=list(model.nodes) if model else [], distribution_complete=model.distribution_complete if model else False,
        as_of_seq=ps.last_seq, taint=tainted.models.get(model_id),
        tainted_evaluations={r.work_id: tainted.evaluations[r.work_id] for r in ratings if r.work_id in tainted.evaluations},
    )
