"""Which old models to delete, pure: on a node (kept versions) and in the object store.

A node keeps, per config, the current model and the `keep_last` models promoted before it.
A version the log never promoted for that config is left alone (it is not ours to judge).
The store keeps the same models, plus candidates not yet judged (trained within
`keep_candidates_h`), plus objects it cannot place that are younger than that.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from config.nodedirs import config_name, version_stem
from eventbus.objects import StoredObject
from projections.models import ModelInfo, ModelsState


class KeptVersion(msgspec.Struct, frozen=True, kw_only=True):
    """One version file on a node."""

    config: str  # e.g. hex8_2p
    stem: str  # file name without suffix (the model id made safe)


def promotion_history(models: ModelsState) -> dict[str, list[ModelInfo]]:
    """Per config name, the promoted models newest promotion first (the current one first)."""
    history: dict[str, list[ModelInfo]] = {}
    for model in models.models.values():
        if model.promotion is not None and model.board_type:
            history.setdefault(config_name(model.board_type, model.num_players), []).append(model)
    for promoted in history.values():
        promoted.sort(key=lambda m: m.promotion.seq if m.promotion else 0, reverse=True)
    return history


def keep_models(history: Mapping[str, Sequence[ModelInfo]], current: Mapping[str, str], keep_last: int) -> dict[str, set[str]]:
    """Per config name, the model ids to keep: the current one and the `keep_last` promoted before it."""
    kept: dict[str, set[str]] = {}
    for config, promoted in history.items():
        now = current.get(config)
        older = [m.model_id for m in promoted if m.model_id != now][:keep_last]
        kept[config] = set(older) | ({now} if now else set())
    return kept


def versions_to_delete(
    installed: Iterable[KeptVersion], history: Mapping[str, Sequence[ModelInfo]], current: Mapping[str, str], keep_last: int
) -> list[KeptVersion]:
    """The version files past the retention policy (only models the log promoted for that config)."""
    kept = keep_models(history, current, keep_last)
    promoted = {config: {version_stem(m.model_id) for m in models} for config, models in history.items()}
    doomed = []
    for version in installed:
        keep = {version_stem(m) for m in kept.get(version.config, set())}
        if version.stem in promoted.get(version.config, set()) and version.stem not in keep:
            doomed.append(version)
    return sorted(doomed, key=lambda v: (v.config, v.stem))


def current_models(models: ModelsState) -> dict[str, str]:
    """Config name -> the promoted model id of that config now."""
    current = {}
    for model_id in models.promoted.values():
        model = models.models.get(model_id)
        if model is not None and model.board_type:
            current[config_name(model.board_type, model.num_players)] = model_id
    return current


def store_deletions(
    objects: Iterable[StoredObject], models: ModelsState, now: dt.datetime, keep_last: int, keep_candidates_h: float
) -> list[StoredObject]:
    """Objects of the models bucket that no node will need again."""
    history = promotion_history(models)
    kept = set().union(*keep_models(history, current_models(models), keep_last).values())
    horizon = now - dt.timedelta(hours=keep_candidates_h)
    doomed = []
    for obj in objects:
        if obj.name in kept:
            continue
        model = models.models.get(obj.name)
        if model is not None and model.promotion is not None:
            doomed.append(obj)  # promoted once, now past the retention policy
            continue
        # A candidate (or an object the log does not know) is kept while it may still be judged.
        born = (_trained_at(model) if model is not None else None) or _mtime(obj)
        if born is None or born < horizon:
            doomed.append(obj)
    return doomed


def _trained_at(model: ModelInfo) -> dt.datetime | None:
    return model.training.at if model.training is not None else None


def _mtime(obj: StoredObject) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(obj.mtime.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
