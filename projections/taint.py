"""Quarantine and taint: which outputs an operator distrusts, and everything derived from them, pure.

A quarantine names roots (a node's batches, models and evaluations since a time, one batch,
one model); `closure` follows the lineage forward from them: a tainted batch taints the models
trained on it, a tainted model taints the models trained from it (its children), the batches
of games it played and the evaluations it played in (as candidate or opponent), and so on
until nothing new is reached. An evaluation feeds no training, so the closure ends there; its
scores no longer count for a promotion. Each tainted output keeps the
quarantine and the upstream output it was reached through, so `rr lineage` can say why.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterable

import msgspec

from eventbus.events import (
    EvaluationComplete,
    Event,
    OutputsQuarantined,
    QuarantineLifted,
    SelfplayComplete,
    TrainingComplete,
)
from projections.base import Anomaly, Projection, rejected, total
from projections.bucketmap import BucketMap
from projections.models import ModelsState
from projections.pmap import Lookup, PMap, decode_all

# 2: evaluations are outputs too (a node's, and those a tainted model played in)
# 3: the batches in hash buckets (projections/bucketmap.py), not a map entry each
VERSION = 3
KINDS = ("node", "batch", "model")


class Quarantine(msgspec.Struct, frozen=True, kw_only=True):
    """One operator's quarantine, and whether it was lifted."""

    quarantine_id: str
    kind: str
    target: str
    reason: str
    since: dt.datetime | None = None
    requested_by: str = ""
    seq: int = 0
    at: dt.datetime | None = None
    lifted: bool = False
    lifted_reason: str = ""


class BatchFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What lineage needs of a selfplay batch: where and when it was made, and with which model."""

    node: str
    at: dt.datetime | None = None
    model_id: str | None = None


class BatchBucket(msgspec.Struct, frozen=True):
    """The batches whose ids hash to one bucket of `BatchFactsMap`."""

    entries: dict[str, BatchFacts] = {}


class BatchFactsMap(BucketMap, frozen=True, array_like=True):
    """Batch id -> BatchFacts, one entry per batch ever reported: read by key, a bucket decoded at a time."""

    buckets: PMap[int, BatchBucket] = msgspec.field(default_factory=PMap)
    bucket = BatchBucket


class ModelFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What lineage needs of a trained model: where and when, from which batches and parent."""

    node: str
    at: dt.datetime | None = None
    input_batches: tuple[str, ...] = ()
    parent_model: str | None = None


class EvaluationFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What lineage needs of an evaluation item: where and when it ran, and the models that played in it."""

    node: str
    at: dt.datetime | None = None
    players: tuple[str, ...] = ()  # the candidate, then each opponent, as its matches reported them


class TaintState(msgspec.Struct, frozen=True, kw_only=True):
    """The quarantines and the lineage graph they are followed through."""

    last_seq: int = 0
    quarantines: PMap[str, Quarantine] = msgspec.field(default_factory=PMap)
    batches: BatchFactsMap = msgspec.field(default_factory=BatchFactsMap)
    models: PMap[str, ModelFacts] = msgspec.field(default_factory=PMap)
    evaluations: PMap[str, EvaluationFacts] = msgspec.field(default_factory=PMap)  # by evaluation work id
    anomalies: tuple[Anomaly, ...] = ()
    anomaly_count: int = 0


class Taint(msgspec.Struct, frozen=True, kw_only=True):
    """Why one output is tainted: the quarantine, its reason, and the output it was reached through."""

    quarantine_id: str
    reason: str
    via: str = ""  # "" for a root; else "batch b-1" or "model m-3"

    def describe(self) -> str:
        """One line: the reason, the quarantine, and the path."""
        return f"{self.reason} (quarantine {self.quarantine_id}" + (f", via {self.via})" if self.via else ")")


class Tainted(msgspec.Struct, frozen=True, kw_only=True):
    """Every tainted batch, model and evaluation (by its work id), each with why."""

    batches: dict[str, Taint] = {}
    models: dict[str, Taint] = {}
    evaluations: dict[str, Taint] = {}


@total
def apply(state: TaintState, event: Event, seq: int) -> TaintState:
    """Record a quarantine, its lifting, or one edge of the lineage graph."""
    if isinstance(event, SelfplayComplete):
        facts = BatchFacts(node=event.node, at=event.ts, model_id=event.model_id)
        return msgspec.structs.replace(state, last_seq=seq, batches=state.batches.set(event.batch_id, facts))
    if isinstance(event, TrainingComplete):
        facts_m = ModelFacts(node=event.node, at=event.ts, input_batches=tuple(event.input_batches), parent_model=event.parent_model)
        return msgspec.structs.replace(state, last_seq=seq, models=state.models.set(event.model_id, facts_m))
    if isinstance(event, EvaluationComplete):
        return msgspec.structs.replace(state, last_seq=seq, evaluations=state.evaluations.set(event.work_id, _evaluated(state, event)))
    if isinstance(event, OutputsQuarantined):
        return _quarantined(state, event, seq)
    if isinstance(event, QuarantineLifted):
        found = state.quarantines.get(event.quarantine_id)
        if found is None:
            return rejected(state, seq, event, f"no quarantine {event.quarantine_id} to lift")
        lifted = msgspec.structs.replace(found, lifted=True, lifted_reason=event.reason)
        return msgspec.structs.replace(state, last_seq=seq, quarantines=state.quarantines.set(event.quarantine_id, lifted))
    return msgspec.structs.replace(state, last_seq=seq)


def _evaluated(state: TaintState, event: EvaluationComplete) -> EvaluationFacts:
    # An evaluation item reports one EVALUATION_COMPLETE per match: its players accumulate.
    known = state.evaluations.get(event.work_id)
    players = known.players if known else ()
    players += tuple(p for p in (event.model_id, event.opponent) if p and p not in players)
    return EvaluationFacts(node=event.node, at=known.at if known else event.ts, players=players)


def _quarantined(state: TaintState, event: OutputsQuarantined, seq: int) -> TaintState:
    if event.kind not in KINDS:
        return rejected(state, seq, event, f"kind {event.kind!r} is not one of {', '.join(KINDS)}")
    if event.kind == "node" and event.since is None:
        return rejected(state, seq, event, "a node's quarantine needs `since`")
    quarantine = Quarantine(
        quarantine_id=event.quarantine_id, kind=event.kind, target=event.target, reason=event.reason,
        since=event.since, requested_by=event.requested_by, seq=seq, at=event.ts,
    )
    return msgspec.structs.replace(state, last_seq=seq, quarantines=state.quarantines.set(event.quarantine_id, quarantine))


def _after(at: dt.datetime | None, since: dt.datetime | None) -> bool:
    return since is None or (at is not None and at >= since)


class Lineage(msgspec.Struct, frozen=True, kw_only=True):
    """The lineage graph a closure follows: batches, models and evaluations as the log reported them."""

    batches: Lookup[str, BatchFacts] | BatchFactsMap = {}
    models: Lookup[str, ModelFacts] = {}
    evaluations: Lookup[str, EvaluationFacts] = {}


def roots(quarantine: Quarantine, graph: Lineage) -> list[tuple[str, str]]:
    """The (kind, id) outputs a quarantine names directly (a node's: those it reported at or after `since`)."""
    if quarantine.kind in ("batch", "model"):
        return [(quarantine.kind, quarantine.target)]
    node, since = quarantine.target, quarantine.since
    made = [("batch", b, f.node, f.at) for b, f in graph.batches.items()]
    made += [("model", m, f.node, f.at) for m, f in graph.models.items()]
    made += [("evaluation", e, f.node, f.at) for e, f in graph.evaluations.items()]
    return sorted((kind, name) for kind, name, where, at in made if where == node and _after(at, since))


def closure(quarantines: Iterable[Quarantine], graph: Lineage) -> Tainted:
    """Every output tainted by the quarantines not lifted, following lineage forward to a fixpoint."""
    derived = _derived(graph)
    found: dict[str, dict[str, Taint]] = {"batch": {}, "model": {}, "evaluation": {}}
    for quarantine in sorted((q for q in quarantines if not q.lifted), key=lambda q: q.seq):
        todo = [(kind, name, "") for kind, name in roots(quarantine, graph)]
        while todo:
            kind, name, via = todo.pop()
            if name in found[kind]:
                continue  # an earlier quarantine (or path) reached it first: it keeps that reason
            found[kind][name] = Taint(quarantine_id=quarantine.quarantine_id, reason=quarantine.reason, via=via)
            todo += [(next_kind, n, f"{kind} {name}") for next_kind, n in derived.get((kind, name), ())]
    return Tainted(batches=found["batch"], models=found["model"], evaluations=found["evaluation"])


def _derived(graph: Lineage) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(kind, id) -> the outputs made from it: models trained on a batch; a model's children, the batches of
    games it played and the evaluations it played in."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for model_id, facts in sorted(graph.models.items()):
        for batch_id in facts.input_batches:
            out.setdefault(("batch", batch_id), []).append(("model", model_id))
        if facts.parent_model:
            out.setdefault(("model", facts.parent_model), []).append(("model", model_id))
    for batch_id, bfacts in sorted(graph.batches.items()):
        if bfacts.model_id:
            out.setdefault(("model", bfacts.model_id), []).append(("batch", batch_id))
    for work_id, efacts in sorted(graph.evaluations.items()):
        for player in efacts.players:
            out.setdefault(("model", player), []).append(("evaluation", work_id))
    return out


def in_force(state: TaintState) -> bool:
    """Whether a quarantine is in force (not lifted)."""
    return not all(q.lifted for q in state.quarantines.values())


def decode_lineage(state: TaintState) -> None:
    """Decode now the lineage's batches a snapshot left as msgpack, when a quarantine is in force.

    Their buckets are read by key only (projections/wire.py) until `tainted` goes over them all: a service
    calls this in a thread right after its load (servicekit/livefold.py), so that its first
    closure does not decode them on its event loop (~1 s at a year's log).
    """
    if in_force(state):
        decode_all(state.batches.buckets)


# The last closures, each with the maps it was computed from: a process holds a few taint folds (the leader's
# pipeline view, distribution and sync planner), each asked many times between two lineage events, and the
# closure goes over the whole lineage (seconds at a year's log). The maps are immutable, so the same objects
# give the same closure; holding the maps keeps their identities from being reused. Four: the leader's three
# folds and one more; each entry holds a Taint per tainted output (a million at a year's log), so it stays small.
_CLOSURES: deque[tuple[tuple[object, ...], Tainted]] = deque(maxlen=4)


def _closure_inputs(state: TaintState) -> tuple[object, ...]:
    return (state.quarantines, state.batches, state.models, state.evaluations)


def known_tainted(state: TaintState) -> Tainted | None:
    """What the state's quarantines taint, when that costs nothing (none in force, or already computed); else None."""
    if not in_force(state):
        return Tainted()
    inputs = _closure_inputs(state)
    for known, found in tuple(_CLOSURES):  # a copy: a service's thread may append meanwhile
        if all(a is b for a, b in zip(known, inputs, strict=True)):
            return found
    return None


def tainted(state: TaintState) -> Tainted:
    """What the state's quarantines taint now (none in force, the common case, or unchanged since asked: costs nothing)."""
    known = known_tainted(state)
    if known is not None:
        return known
    found = closure(state.quarantines.values(), Lineage(batches=state.batches, models=state.models, evaluations=state.evaluations))
    _CLOSURES.append((_closure_inputs(state), found))
    return found


def rollbacks(models_state: ModelsState, taint: Tainted) -> list[tuple[str, str, str]]:
    """(config, tainted promoted model, newest untainted model promoted before it in that config, or '') per config to roll back."""
    out = []
    for config, best in sorted(models_state.promoted.items()):
        if best not in taint.models:
            continue
        earlier = [
            (m.promotion.seq, m.model_id) for m in models_state.models.values()
            if m.config == config and m.promotion is not None and m.model_id not in taint.models and m.sha256
        ]
        out.append((config, best, max(earlier)[1] if earlier else ""))
    return out


# The maps the bundle's rebuild may hold as plain dicts (projections/dictmap.py, the bundle's open set): the
# fold writes `batches` by `set` alone (one per batch report) and never reads a map of a state it replaced.
DICT_MAPS = ("batches",)

LINEAGE_TYPES = (SelfplayComplete.type_name(), TrainingComplete.type_name(), EvaluationComplete.type_name())
READS = frozenset((*LINEAGE_TYPES, OutputsQuarantined.type_name(), QuarantineLifted.type_name()))

PROJECTION: Projection[TaintState] = Projection(name="taint", version=VERSION, initial=TaintState, apply=apply, reads=READS)
