"""Models: how each was trained, which one is promoted per config, and which nodes hold a verified copy."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import msgspec

from eventbus.events import (
    ArtifactRef,
    Event,
    LeaderElected,
    LeaseWritten,
    ModelDistributed,
    ModelDistributionComplete,
    ModelPromoted,
    TrainingComplete,
)
from projections import attempts as attempt_rule
from projections.attempts import Attempts, late
from projections.base import Anomaly, Projection, config_key, rejected, total
from projections.fence import Fence, judged
from projections.pmap import PMap

# 2: domain results of superseded attempts are anomalies
# 3: a training keeps its checkpoint (node, path, size), which the distributor used to fold beside it
# 4: a training keeps its trace, which the pipeline's evaluation and promotion continue
# 5: completed items' attempts retire (projections/attempts.py)
VERSION = 5


class Training(msgspec.Struct, frozen=True, kw_only=True):
    """The training job that produced a model."""

    work_id: str
    node: str
    seq: int
    at: dt.datetime | None = None
    input_batches: tuple[str, ...] = ()
    parent_model: str | None = None
    checkpoint_sha256: str = ""
    metrics: dict[str, float] = {}
    checkpoint: ArtifactRef | None = None  # where the file was written, its node filled in (`rr lineage` shows the sha above)
    trace: str | None = None  # its TRAINING_COMPLETE's trace: the model's evaluation and promotion continue it


class Promotion(msgspec.Struct, frozen=True, kw_only=True):
    """The leader's decision that made a model the best of its config."""

    seq: int
    at: dt.datetime | None = None
    generation: int = 0
    reason: str = ""
    evaluation_work_id: str | None = None
    previous_model: str | None = None
    epoch: int | None = None
    by: str = ""


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One model: its config, lineage facts, promotion, and where verified copies are."""

    model_id: str
    board_type: str = ""
    num_players: int = 0
    sha256: str = ""
    size_bytes: int = 0
    training: Training | None = None
    promotion: Promotion | None = None
    nodes: tuple[str, ...] = ()  # sorted; nodes that installed a copy whose sha256 matched
    distribution_complete: bool = False

    @property
    def config(self) -> str:
        """Its training config, e.g. hex8_2p ('' when no event named it)."""
        return config_key(self.board_type, self.num_players) if self.board_type else ""


class ModelsState(msgspec.Struct, frozen=True, kw_only=True):
    """Every model by id and the promoted one per config, at stream position `last_seq`."""

    last_seq: int = 0
    models: PMap[str, ModelInfo] = msgspec.field(default_factory=PMap)
    promoted: dict[str, str] = {}  # config -> model id
    fence: Fence = msgspec.field(default_factory=Fence)
    attempts: Attempts = msgspec.field(default_factory=Attempts)  # only the current attempt's results count
    anomalies: tuple[Anomaly, ...] = ()
    anomaly_count: int = 0


def _model(state: ModelsState, model_id: str) -> ModelInfo:
    return state.models.get(model_id) or ModelInfo(model_id=model_id)


def _stored(state: ModelsState, seq: int, model: ModelInfo, **changes: object) -> ModelsState:
    return msgspec.structs.replace(state, last_seq=seq, models=state.models.set(model.model_id, model), **changes)


def training_complete(state: ModelsState, event: TrainingComplete, seq: int) -> ModelsState:
    """A candidate model exists, with the batches and parent it was trained from."""
    checkpoint = event.checkpoint
    training = Training(
        work_id=event.work_id, node=event.node, seq=seq, at=event.ts, input_batches=tuple(event.input_batches),
        parent_model=event.parent_model, checkpoint_sha256=checkpoint.sha256 if checkpoint else "",
        metrics=dict(event.metrics), checkpoint=_on_node(checkpoint, event.node), trace=event.trace,
    )
    model = msgspec.structs.replace(
        _model(state, event.model_id), board_type=event.board_type, num_players=event.num_players,
        sha256=checkpoint.sha256 if checkpoint else "", size_bytes=checkpoint.size_bytes if checkpoint else 0,
        training=training,
    )
    return _stored(state, seq, model)


def _on_node(checkpoint: ArtifactRef | None, node: str) -> ArtifactRef | None:
    # Workers leave `node` empty: the file is on the node that reported the training.
    if checkpoint is None or checkpoint.node:
        return checkpoint
    return msgspec.structs.replace(checkpoint, node=node)


def checkpoint_of(model: ModelInfo | None) -> ArtifactRef | None:
    """Where the model's training wrote its checkpoint (node filled in), None when no training reported one."""
    return model.training.checkpoint if model is not None and model.training is not None else None


def model_promoted(state: ModelsState, event: ModelPromoted, seq: int) -> ModelsState:
    """The leader made a model its config's best (a fenced decision)."""
    promotion = Promotion(
        seq=seq, at=event.ts, generation=event.generation, reason=event.reason,
        evaluation_work_id=event.evaluation_work_id, previous_model=event.previous_model, epoch=event.epoch,
        by=event.source,
    )
    model = msgspec.structs.replace(
        _model(state, event.model_id), board_type=event.board_type, num_players=event.num_players,
        sha256=event.sha256, size_bytes=event.size_bytes or _model(state, event.model_id).size_bytes,
        promotion=promotion,
    )
    promoted = {**state.promoted, model.config: model.model_id}
    return _stored(state, seq, model, promoted=promoted)


def model_distributed(state: ModelsState, event: ModelDistributed, seq: int) -> ModelsState:
    """A node holds a copy; one whose sha256 differs from the model's is an anomaly, not a copy."""
    model = _model(state, event.model_id)
    if model.sha256 and event.sha256 != model.sha256:
        return rejected(
            state, seq, event, f"copy on {event.node} has sha256 {event.sha256[:12]}, model has {model.sha256[:12]}"
        )
    nodes = model.nodes if event.node in model.nodes else tuple(sorted((*model.nodes, event.node)))
    return _stored(state, seq, msgspec.structs.replace(model, nodes=nodes, sha256=model.sha256 or event.sha256))


def distribution_complete(state: ModelsState, event: ModelDistributionComplete, seq: int) -> ModelsState:
    """Every node that needs the model has it."""
    model = _model(state, event.model_id)
    return _stored(state, seq, msgspec.structs.replace(model, distribution_complete=True))


# Each handler takes the one event type it is keyed by.
_HANDLERS: dict[type[Event], Callable[[ModelsState, Any, int], ModelsState]] = {
    TrainingComplete: training_complete,
    ModelPromoted: model_promoted,
    ModelDistributed: model_distributed,
    ModelDistributionComplete: distribution_complete,
}


@total
def apply(state: ModelsState, event: Event, seq: int) -> ModelsState:
    """The models after one event at stream position `seq`; stale promotions are dropped."""
    kind = type(event)  # tested by class: a type's name is a classmethod call per test
    if kind in attempt_rule.KINDS:  # read only to know which attempts may still report
        attempts = attempt_rule.learned(state.attempts, state.fence.view, event, seq)
        return msgspec.structs.replace(state, last_seq=seq, attempts=attempts)
    state, goes_on = judged(state, event, seq)
    if not goes_on:
        return state
    if isinstance(event, TrainingComplete):
        problem = late(state.attempts, event.work_id, event.attempt, event.node)
        if problem is not None:
            return rejected(state, seq, event, problem)
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return msgspec.structs.replace(state, last_seq=seq)
    return handler(state, event, seq)


def promoted_models(state: ModelsState) -> dict[str, ModelInfo]:
    """The promoted model of each config."""
    return {config: state.models[model_id] for config, model_id in sorted(state.promoted.items())}


PROJECTION: Projection[ModelsState] = Projection(
    name="models",
    version=VERSION,
    initial=ModelsState,
    apply=apply,
    reads=frozenset({LeaderElected.type_name(), LeaseWritten.type_name(), *attempt_rule.READS, *(t.type_name() for t in _HANDLERS)}),
)
