"""What a node's distributor should do next, pure: from the folds of the log and what is on its disk.

The agent reconciles instead of reacting to single events, so a node that was offline, or
restarted mid-download, does the same thing as one that saw every event: the promoted model
of each config gets installed (copied from its own checkpoint when it trained it, else
downloaded), made current, and announced once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Set

import msgspec

from config.nodedirs import config_name, version_stem
from eventbus.events import ArtifactRef
from projections.cluster import ClusterState
from projections.models import ModelInfo, ModelsState, checkpoint_of
from services.distributor.install import LocalModels


class Activate(msgspec.Struct, frozen=True, kw_only=True, tag="activate"):
    """The verified version is here; make it the config's current model."""

    model: ModelInfo


class CopyLocal(msgspec.Struct, frozen=True, kw_only=True, tag="copy"):
    """This node trained the model: copy (and verify) its own checkpoint."""

    model: ModelInfo
    checkpoint: ArtifactRef


class Download(msgspec.Struct, frozen=True, kw_only=True, tag="download"):
    """Fetch the model from the object store."""

    model: ModelInfo


class Announce(msgspec.Struct, frozen=True, kw_only=True, tag="announce"):
    """The model is current here but the log does not say so yet (MODEL_DISTRIBUTED)."""

    model: ModelInfo


Step = Activate | CopyLocal | Download | Announce


def promoted(models: ModelsState) -> list[ModelInfo]:
    """The promoted model of each config that names its content (sha256), by config."""
    chosen = (models.models.get(model_id) for _config, model_id in sorted(models.promoted.items()))
    return [m for m in chosen if m is not None and m.sha256 and m.board_type]


def own_checkpoint(model: ModelInfo, node: str) -> ArtifactRef | None:
    """This node's checkpoint of the model, if it trained it and the file is the promoted content."""
    ref = checkpoint_of(model)
    if ref is None or ref.node != node or (ref.sha256 and ref.sha256 != model.sha256):
        return None
    return ref


def step_for(model: ModelInfo, local: LocalModels, node: str, no_local: Set[str] = frozenset()) -> Step | None:
    """The next step for one promoted model on this node; None when it is installed, current and announced.

    A model in `no_local` is downloaded even when this node trained it (its own checkpoint proved unusable).
    """
    config = config_name(model.board_type, model.num_players)
    stem = version_stem(model.model_id)
    size = local.size_of(config, stem)
    if size is not None and (not model.size_bytes or size == model.size_bytes):
        if local.active.get(config) != stem:
            return Activate(model=model)
        return None if node in model.nodes else Announce(model=model)
    checkpoint = own_checkpoint(model, node) if model.model_id not in no_local else None
    return CopyLocal(model=model, checkpoint=checkpoint) if checkpoint else Download(model=model)


def next_steps(models: ModelsState, local: LocalModels, node: str, no_local: Set[str] = frozenset()) -> list[Step]:
    """One step per config whose promoted model is not yet installed, current and announced here."""
    steps = (step_for(m, local, node, no_local) for m in promoted(models))
    return [s for s in steps if s is not None]


def uploads_due(models: ModelsState, node: str, since: dt.datetime) -> list[tuple[str, ArtifactRef]]:
    """(model id, checkpoint) this node must have in the store: its promoted models and its recent candidates."""
    current = {m.model_id for m in promoted(models)}
    due = []
    for model_id, model in sorted(models.models.items()):
        ref, trained = checkpoint_of(model), model.training
        recent = trained is not None and trained.at is not None and trained.at >= since
        if ref is not None and ref.node == node and (model_id in current or recent):
            due.append((model_id, ref))
    return due


def repairer(model: ModelInfo, alive: Callable[[str], bool]) -> str | None:
    """The one node that re-uploads a corrupt object: the trainer if alive, else the first alive holder."""
    checkpoint = checkpoint_of(model)
    candidates = ([checkpoint.node] if checkpoint is not None else []) + sorted(model.nodes)
    return next((n for n in candidates if alive(n)), None)


def is_alive(cluster: ClusterState) -> Callable[[str], bool]:
    """Whether the log says a node is alive; a node it never heard of counts as alive (no membership running)."""
    def alive(node: str) -> bool:
        info = cluster.nodes.get(node)
        return info is None or info.alive

    return alive
