"""A model's standing: promoted, rated on its config's Elo scale, and installed on the nodes."""

from __future__ import annotations

from typing import Annotated, ClassVar

from msgspec import Meta

from eventbus.events.base import Event
from eventbus.events.bounds import Count, Measure, Name, Path, Players, Ref, Seconds, Small, Text


class ModelPromoted(Event, tag="MODEL_PROMOTED", kw_only=True):
    """The leader made a model the best for its config (a leader decision: carries epoch)."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    board_type: Name
    num_players: Players
    sha256: Name
    size_bytes: Count = 0
    generation: Small = 0
    reason: Text = ""
    evaluation_work_id: Ref | None = None
    previous_model: Ref | None = None


class ModelRated(Event, tag="MODEL_RATED", kw_only=True):
    """A player got its rating on its config's Elo scale (random play = 0), from games (a leader decision)."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref  # a model id, or the config's pure-search anchor
    board_type: Name
    num_players: Players
    elo: Measure
    interval: Measure = 0.0  # half-width of the 95% interval, opponents' uncertainty included
    games: Count = 0
    opponents: Annotated[list[Ref], Meta(max_length=128)] = []  # who it was rated against
    kind: Name = "candidate"  # candidate (promoted or not: see MODEL_PROMOTED), anchor, or tournament
    evaluation_work_id: Ref | None = None  # the evaluation or tournament item whose games it rests on


class ModelDistributed(Event, tag="MODEL_DISTRIBUTED", kw_only=True):
    """One node has installed a verified copy of a model."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    node: Ref
    sha256: Name
    seconds: Seconds = 0.0
    path: Path = ""


class ModelDistributionComplete(Event, tag="MODEL_DISTRIBUTION_COMPLETE", kw_only=True):
    """Every alive node that needs a model has it."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    nodes: Annotated[list[Ref], Meta(max_length=512)] = []
    seconds: Seconds = 0.0


class ModelDistributionFailed(Event, tag="MODEL_DISTRIBUTION_FAILED", kw_only=True):
    """One node could not install (or upload) a model this time; it retries after `retry_in_s`."""

    aggregate: ClassVar[str] = "model"
    key_field: ClassVar[str] = "model_id"
    model_id: Ref
    node: Ref
    kind: Name  # corrupt, disk_full, missing, io, unavailable, checkpoint_missing
    reason: Text  # the sentence an operator reads
    attempt: Small = 1
    retry_in_s: Seconds = 0.0
    object_nuid: Ref = ""  # the stored object version that was read, for a corrupt one
