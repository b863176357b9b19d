"""What the jobs report: a selfplay batch written, a training begun and finished, an evaluation played."""

from __future__ import annotations

from typing import Annotated, ClassVar

from msgspec import Meta

from eventbus.events.base import Event
from eventbus.events.bounds import Fraction, Measure, Name, Players, Ref, Small
from eventbus.events.work import ArtifactRef


class SelfplayComplete(Event, tag="SELFPLAY_COMPLETE", kw_only=True):
    """A selfplay job wrote a batch of games on a node."""

    aggregate: ClassVar[str] = "data"
    key_field: ClassVar[str] = "batch_id"
    batch_id: Ref
    work_id: Ref
    node: Ref
    board_type: Name
    num_players: Players
    num_games: Small
    num_samples: Small = 0
    data: ArtifactRef | None = None
    model_id: Ref | None = None  # the model that played, None for random play
    attempt: Small = 0  # the work item's attempt that wrote it; 0: written before results carried one


class TrainingStarted(Event, tag="TRAINING_STARTED", kw_only=True):
    """A training job began on a node from these batches."""

    aggregate: ClassVar[str] = "work"
    key_field: ClassVar[str] = "work_id"
    work_id: Ref
    node: Ref
    board_type: Name
    num_players: Players
    input_batches: Annotated[list[Ref], Meta(max_length=128)] = []
    parent_model: Ref | None = None


class TrainingComplete(Event, tag="TRAINING_COMPLETE", kw_only=True):
    """Training produced a candidate model checkpoint."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    work_id: Ref
    node: Ref
    board_type: Name
    num_players: Players
    checkpoint: ArtifactRef | None = None
    metrics: Annotated[dict[Name, Measure], Meta(max_length=64)] = {}
    input_batches: Annotated[list[Ref], Meta(max_length=128)] = []
    parent_model: Ref | None = None
    attempt: Small = 0  # the work item's attempt that wrote it; 0: written before results carried one


class EvaluationComplete(Event, tag="EVALUATION_COMPLETE", kw_only=True):
    """A candidate model played an opponent; results and rating."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    work_id: Ref
    node: Ref
    opponent: Name  # a model id, a config's pure-search anchor (e.g. hex8_2p-search16), or "random"
    games: Small
    wins: Small
    losses: Small
    draws: Small = 0
    win_rate: Fraction = 0.0
    elo: Measure | None = None  # the Elo difference the score implies (not a rating: see MODEL_RATED)
    sims: Small = 0  # simulations per move of every searching player (0: not reported)
    gate: bool = False  # the promotion gate's match, stopped by the sequential test
    verdict: Name = ""  # the gate's SPRT verdict: H1 (promote), H0, max_games
    llr: Measure | None = None  # ... and its log-likelihood ratio
    attempt: Small = 0  # the work item's attempt that wrote it; 0: written before results carried one
