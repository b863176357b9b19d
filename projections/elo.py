"""Elo: every evaluation of each model in order, and each player's rating on its config's one scale (MODEL_RATED).

The scale is anchored (random play = 0, the pure-search anchor rated once from games); an
evaluation's `elo` is only the difference its score implies against that one opponent, so the
views (rr models, rr status, the dashboard) show the scale's ratings, never those differences.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from eventbus.events import EvaluationComplete, Event, ModelPromoted, ModelRated, TrainingComplete
from projections import attempts as attempt_rule
from projections import withdrawal
from projections.attempts import Attempts, late
from projections.base import Anomaly, Projection, config_key, rejected, total
from projections.fencing import FenceView
from projections.pmap import PMap
from projections.withdrawal import Withdrawals

# 2: ratings from evaluation items that ended failed or cancelled do not count; 3: MODEL_RATED
# 4: ratings from superseded attempts are anomalies (projections/attempts.py)
# 5: completed items' attempts retire (projections/attempts.py)
VERSION = 5

# This history keeps no fence: with the server refusing a deposed leader's decisions, every stored
# assignment is taken (a log written before then may hold a stale one, which can only widen what counts).
NO_FENCE = FenceView()


class Rating(msgspec.Struct, frozen=True, kw_only=True):
    """One evaluation of a model against an opponent, and the rating it gave."""

    seq: int
    at: dt.datetime | None = None
    work_id: str = ""
    node: str = ""
    opponent: str = ""
    games: int = 0
    wins: int = 0
    losses: int = 0
    draws: int = 0
    win_rate: float = 0.0
    elo: float | None = None


class ScaleRating(msgspec.Struct, frozen=True, kw_only=True):
    """A player's rating on its config's scale, from MODEL_RATED."""

    seq: int
    at: dt.datetime | None = None
    model_id: str
    elo: float
    interval: float = 0.0  # half-width of the 95% interval
    games: int = 0
    opponents: tuple[str, ...] = ()
    kind: str = "candidate"  # candidate, anchor or tournament
    evaluation_work_id: str | None = None


class EloState(msgspec.Struct, frozen=True, kw_only=True):
    """Evaluations per model (oldest first), ratings on the scale and each player's config, at `last_seq`."""

    last_seq: int = 0
    history: PMap[str, tuple[Rating, ...]] = msgspec.field(default_factory=PMap)
    configs: PMap[str, str] = msgspec.field(default_factory=PMap)  # model id -> config
    withdrawals: Withdrawals = msgspec.field(default_factory=Withdrawals)  # items whose ratings do not count
    ratings: PMap[str, ScaleRating] = msgspec.field(default_factory=PMap)  # player -> its newest rating
    attempts: Attempts = msgspec.field(default_factory=Attempts)  # only the current attempt's ratings count
    anomalies: tuple[Anomaly, ...] = ()
    anomaly_count: int = 0


@total
def apply(state: EloState, event: Event, seq: int) -> EloState:
    """The Elo history after one event at stream position `seq`."""
    kind = type(event)  # tested by class: a type's name is a classmethod call per test
    if kind in attempt_rule.KINDS:
        attempts = attempt_rule.learned(state.attempts, NO_FENCE, event, seq)
        if kind not in withdrawal.KINDS:
            return msgspec.structs.replace(state, last_seq=seq, attempts=attempts)
        if attempts is not state.attempts:
            state = msgspec.structs.replace(state, attempts=attempts)
    if isinstance(event, EvaluationComplete):
        problem = late(state.attempts, event.work_id, event.attempt, event.node)
        if problem is not None:
            return rejected(state, seq, event, problem)
        rating = Rating(
            seq=seq, at=event.ts, work_id=event.work_id, node=event.node, opponent=event.opponent, games=event.games,
            wins=event.wins, losses=event.losses, draws=event.draws, win_rate=event.win_rate, elo=event.elo,
        )
        history = state.history.set(event.model_id, state.history.get(event.model_id, ()) + (rating,))
        return msgspec.structs.replace(state, last_seq=seq, history=history)
    if isinstance(event, ModelRated):
        scale = ScaleRating(
            seq=seq, at=event.ts, model_id=event.model_id, elo=event.elo, interval=event.interval, games=event.games,
            opponents=tuple(event.opponents), kind=event.kind, evaluation_work_id=event.evaluation_work_id,
        )
        configs = state.configs.set(event.model_id, config_key(event.board_type, event.num_players))
        return msgspec.structs.replace(state, last_seq=seq, ratings=state.ratings.set(event.model_id, scale), configs=configs)
    if isinstance(event, (TrainingComplete, ModelPromoted)):
        configs = state.configs.set(event.model_id, config_key(event.board_type, event.num_players))
        return msgspec.structs.replace(state, last_seq=seq, configs=configs)
    if kind in withdrawal.KINDS:
        return msgspec.structs.replace(state, last_seq=seq, withdrawals=withdrawal.apply(state.withdrawals, event))
    return msgspec.structs.replace(state, last_seq=seq)


def ratings(state: EloState, model_id: str) -> tuple[Rating, ...]:
    """A model's ratings that count (not from an evaluation item that ended failed or cancelled), oldest first."""
    return tuple(r for r in state.history.get(model_id, ()) if state.withdrawals.counts(r.work_id))


def scale_ratings(state: EloState) -> dict[str, ScaleRating]:
    """Player -> its rating on its config's scale, unless the item it rests on ended failed or cancelled."""
    return {m: r for m, r in state.ratings.items() if state.withdrawals.counts(r.evaluation_work_id or "")}


def scale_rating(state: EloState, model_id: str) -> ScaleRating | None:
    """A player's rating on its config's scale that counts, None while it has none."""
    rating = state.ratings.get(model_id)
    return rating if rating is not None and state.withdrawals.counts(rating.evaluation_work_id or "") else None


def latest_elo(state: EloState, model_id: str) -> float | None:
    """A player's rating (Elo) on its config's scale, None while it has none."""
    rating = scale_rating(state, model_id)
    return rating.elo if rating is not None else None


def by_config(state: EloState) -> dict[str, dict[str, float]]:
    """The rating of each rated player (models and anchors), grouped by config ('' for unknown config)."""
    out: dict[str, dict[str, float]] = {}
    for model_id, rating in scale_ratings(state).items():
        out.setdefault(state.configs.get(model_id, ""), {})[model_id] = rating.elo
    return {config: dict(sorted(models.items())) for config, models in sorted(out.items())}


def anchors(state: EloState) -> dict[str, ScaleRating]:
    """Config -> its rated pure-search anchor."""
    return {state.configs.get(r.model_id, ""): r for _, r in sorted(scale_ratings(state).items()) if r.kind == "anchor"}


PROJECTION: Projection[EloState] = Projection(
    name="elo",
    version=VERSION,
    initial=EloState,
    apply=apply,
    reads=frozenset({EvaluationComplete.type_name(), TrainingComplete.type_name(), ModelPromoted.type_name(),
                     ModelRated.type_name(), *withdrawal.READS, *attempt_rule.READS}),
)
