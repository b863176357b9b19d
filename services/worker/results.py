"""From a finished job to its events, pure: WORK_COMPLETED plus the domain event its `{"result": ...}` line implies.

selfplay -> SELFPLAY_COMPLETE, training -> TRAINING_COMPLETE, evaluation -> one EVALUATION_COMPLETE
per opponent played. A job that printed no result line (a lab script without the protocol)
completes with no domain event; one whose result cannot be read fails, so nobody mistakes it
for a success that produced nothing.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from eventbus.events import (
    ArtifactRef,
    EvaluationComplete,
    Event,
    ModelRated,
    SelfplayComplete,
    TrainingComplete,
    TrainingStarted,
    WorkAdded,
    WorkAttemptFailed,
    WorkCompleted,
    WorkHandedBack,
)
from services.worker.cause import cause_of
from services.worker.jobs import JobOutcome
from services.worker.outputs import BestModel
from services.worker.protocol import AttemptKey
from workload.ratings import Pairing, Rated, anchor_id


class SelfplayResult(msgspec.Struct, frozen=True, kw_only=True, tag="selfplay", tag_field="kind"):
    """What workload.selfplay reports."""

    board_type: str
    num_players: int
    num_games: int
    num_samples: int = 0
    path: str = ""
    size_bytes: int = 0
    sha256: str = ""
    model: str = "none"


class TrainingResult(msgspec.Struct, frozen=True, kw_only=True, tag="training", tag_field="kind"):
    """What workload.train reports."""

    board_type: str
    num_players: int
    path: str
    size_bytes: int = 0
    sha256: str = ""
    metrics: dict[str, float] = {}
    generation: int = 0
    input_batches: list[str] = []
    parent: str = "none"


class MatchResult(msgspec.Struct, frozen=True, kw_only=True):
    """One match of an evaluation."""

    games: int
    wins: int
    losses: int
    draws: int = 0
    win_rate: float = 0.0
    elo_diff: float | None = None


class PlayerMatch(MatchResult, frozen=True, kw_only=True):
    """One match of an evaluation, naming both sides: candidate or anchor, against best, anchor or random."""

    player: str = "candidate"
    opponent: str
    gate: bool = False
    verdict: str = ""
    llr: float | None = None


class EvaluationResult(msgspec.Struct, frozen=True, kw_only=True, tag="evaluation", tag_field="kind"):
    """What workload.evaluate reports (`matches`; lab scripts may report vs_random / vs_best instead)."""

    board_type: str
    num_players: int
    candidate: str
    best: str = "none"
    sims: int = 0
    anchor: str = ""  # the config's pure-search anchor id at these sims
    matches: list[PlayerMatch] = []
    vs_random: MatchResult | None = None
    vs_best: MatchResult | None = None


class TournamentResult(msgspec.Struct, frozen=True, kw_only=True, tag="tournament", tag_field="kind"):
    """What workload.tournament reports."""

    board_type: str
    num_players: int
    sims: int = 0
    players: list[str] = []
    pairings: list[Pairing] = []
    ratings: dict[str, Rated] = {}
    anchored: bool = False  # random play took part, fixed at 0: the ratings are on the config's scale


JobResult = SelfplayResult | TrainingResult | EvaluationResult | TournamentResult


class BadResult(ValueError):
    """A result line that does not say what its kind must."""


def decode_result(raw: object) -> JobResult:
    """The typed result of a job's result line; raises BadResult naming the field."""
    try:
        result: JobResult = msgspec.convert(raw, JobResult)
        return result
    except msgspec.ValidationError as exc:
        raise BadResult(str(exc)) from None


def attempt_failed(key: AttemptKey, node: str, reason: str, exit_code: int | None = None, stderr_tail: str = "") -> WorkAttemptFailed:
    """The event that ends an attempt without completing it, with the cause its stderr names."""
    return WorkAttemptFailed(work_id=key.work_id, node=node, attempt=key.attempt, reason=reason,
                             exit_code=exit_code, stderr_tail=stderr_tail, cause=cause_of(stderr_tail))


def handed_back(key: AttemptKey, node: str, reason: str) -> WorkHandedBack:
    """The event that gives an attempt back without counting it as failed (the worker stops, not the job)."""
    return WorkHandedBack(work_id=key.work_id, node=node, attempt=key.attempt, reason=reason)


def outcome_events(item: WorkAdded, key: AttemptKey, node: str, outcome: JobOutcome, outputs: list[ArtifactRef],
                   best: BestModel | None = None, hand_back: bool = False) -> list[Event]:
    """The events that end an attempt, in the order to publish them (the domain event before WORK_COMPLETED).

    `best` is the model the worker handed the job as {model_path}, if any; `hand_back`: the job
    was stopped because the worker stops, so an attempt it did not finish is handed back.
    """
    if hand_back and outcome.stop_reason is not None:
        return [handed_back(key, node, outcome.stop_reason)]
    if not outcome.succeeded:
        reason = outcome.stop_reason or f"exited with status {outcome.exit_code}"
        return [attempt_failed(key, node, reason, outcome.exit_code, outcome.stderr_tail)]
    completed = WorkCompleted(work_id=key.work_id, node=node, attempt=key.attempt, duration_s=outcome.duration_s,
                              exit_code=0, outputs=outputs)
    if outcome.result is None:
        return [completed]
    try:
        result = decode_result(outcome.result)
    except BadResult as exc:
        return [attempt_failed(key, node, f"bad result line: {exc}", 0, outcome.stderr_tail)]
    return [*domain_events(item, key, node, result, outputs, best), completed]


def _ref(path: str, size: int, sha256: str, node: str, outputs: list[ArtifactRef]) -> ArtifactRef | None:
    """The hashed output at `path` (the worker's own hash), else the job's own report of it."""
    if not path:
        return None
    absolute = str(Path(path).absolute())
    for ref in outputs:
        if ref.path == absolute:
            return ref
    return ArtifactRef(path=absolute, size_bytes=size, sha256=sha256, node=node)


def _model_id(path: str, best: BestModel | None) -> str | None:
    """The model a checkpoint path names: the best model's id when it is the file the worker handed over, else its stem."""
    if path in ("", "none"):
        return None
    return best.model_id if best is not None and Path(path) == best.path else Path(path).stem


def _param(item: WorkAdded, name: str) -> str | None:
    value = item.params.get(name)
    return None if value in (None, "") else str(value)


def training_started(item: WorkAdded, node: str) -> TrainingStarted:
    """What a training job's start establishes: which batches it reads (`inputs`, or params on older items), from which parent."""
    return TrainingStarted(work_id=item.work_id, node=node, board_type=item.board_type, num_players=item.num_players,
                           input_batches=item.input_batch_ids(), parent_model=_param(item, "parent_model"))


def domain_events(item: WorkAdded, key: AttemptKey, node: str, result: JobResult, outputs: list[ArtifactRef],
                  best: BestModel | None = None) -> list[Event]:
    """The pipeline fact a successful job established; `params.model_id` and the item's inputs name what it made and used."""
    if isinstance(result, SelfplayResult):
        return [SelfplayComplete(
            batch_id=f"{key.work_id}-a{key.attempt}", work_id=key.work_id, node=node, board_type=result.board_type,
            num_players=result.num_players, num_games=result.num_games, num_samples=result.num_samples,
            data=_ref(result.path, result.size_bytes, result.sha256, node, outputs),
            model_id=_model_id(result.model, best), attempt=key.attempt,
        )]
    if isinstance(result, TrainingResult):
        checkpoint = _ref(result.path, result.size_bytes, result.sha256, node, outputs)
        sha = checkpoint.sha256 if checkpoint else result.sha256
        batches = item.input_batch_ids()  # `inputs`, or params on items added before them
        return [TrainingComplete(
            model_id=_param(item, "model_id") or f"{result.board_type}_{result.num_players}p-{sha[:12]}",
            work_id=key.work_id, node=node, board_type=result.board_type, num_players=result.num_players,
            checkpoint=checkpoint, metrics=dict(result.metrics),
            input_batches=batches or list(result.input_batches),
            parent_model=_param(item, "parent_model") or _model_id(result.parent, best), attempt=key.attempt,
        )]
    if isinstance(result, TournamentResult):
        return tournament_events(key, result)
    return evaluation_events(item, key, node, result, best)


def tournament_events(key: AttemptKey, result: TournamentResult) -> list[Event]:
    """One MODEL_RATED per player of an anchored round robin (random play, the scale's zero, needs none)."""
    if not result.anchored:
        return []  # ratings relative to an arbitrary player are on no config's scale
    anchor = anchor_id(result.board_type, result.num_players, result.sims)
    out: list[Event] = []
    for name, r in sorted(result.ratings.items()):
        if name == "random":
            continue
        opponents = sorted({p.b for p in result.pairings if p.a == name} | {p.a for p in result.pairings if p.b == name})
        out.append(ModelRated(
            model_id=name, board_type=result.board_type, num_players=result.num_players, elo=r.elo,
            interval=r.interval, games=r.games, opponents=opponents, kind="anchor" if name == anchor else "tournament",
            evaluation_work_id=key.work_id,
        ))
    return out


def evaluation_events(item: WorkAdded, key: AttemptKey, node: str, result: EvaluationResult,
                      best: BestModel | None = None) -> list[Event]:
    """One EVALUATION_COMPLETE per match played; `elo` is the Elo difference the score implies."""
    model_id = _param(item, "model_id") or _model_id(result.candidate, None) or result.candidate
    names = {"candidate": model_id, "anchor": result.anchor or "anchor", "random": "random",
             "best": _model_id(result.best, best) or "best"}
    matches = list(result.matches) or [
        PlayerMatch(opponent=opponent, **msgspec.structs.asdict(m))
        for opponent, m in (("random", result.vs_random), ("best", result.vs_best)) if m is not None
    ]
    return [
        EvaluationComplete(
            model_id=names.get(m.player, m.player), work_id=key.work_id, node=node,
            opponent=names.get(m.opponent, m.opponent), games=m.games, wins=m.wins, losses=m.losses, draws=m.draws,
            win_rate=m.win_rate, elo=m.elo_diff, sims=result.sims, gate=m.gate, verdict=m.verdict, llr=m.llr,
            attempt=key.attempt,
        )
        for m in matches
    ]
