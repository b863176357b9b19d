"""Elo history: every evaluation of each model, in order, and the latest rating per model of each config."""

from __future__ import annotations

import datetime as dt

import msgspec

from eventbus.events import Event, EvaluationComplete, ModelPromoted, TrainingComplete
from projections import withdrawal
from projections.base import Anomaly, Projection, config_key, total
from projections.pmap import PMap
from projections.withdrawal import Withdrawals

VERSION = 2  # 2: ratings from evaluation items that ended failed or cancelled do not count


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


class EloState(msgspec.Struct, frozen=True, kw_only=True):
    """Ratings per model (oldest first) and each model's config, at stream position `last_seq`."""

    last_seq: int = 0
    history: PMap[str, tuple[Rating, ...]] = msgspec.field(default_factory=PMap)
    configs: PMap[str, str] = msgspec.field(default_factory=PMap)  # model id -> config
    withdrawals: Withdrawals = msgspec.field(default_factory=Withdrawals)  # items whose ratings do not count
    anomalies: tuple[Anomaly, ...] = ()
    anomaly_count: int = 0


@total
def apply(state: EloState, event: Event, seq: int) -> EloState:
    """The Elo history after one event at stream position `seq`."""
    if isinstance(event, EvaluationComplete):
        rating = Rating(
            seq=seq, at=event.ts, work_id=event.work_id, node=event.node, opponent=event.opponent, games=event.games,
            wins=event.wins, losses=event.losses, draws=event.draws, win_rate=event.win_rate, elo=event.elo,
        )
        history = state.history.set(event.model_id, state.history.get(event.model_id, ()) + (rating,))
        return msgspec.structs.replace(state, last_seq=seq, history=history)
    if isinstance(event, (TrainingComplete, ModelPromoted)):
        configs = state.configs.set(event.model_id, config_key(event.board_type, event.num_players))
        return msgspec.structs.replace(state, last_seq=seq, configs=configs)
    if event.type_name() in withdrawal.READS:
        return msgspec.structs.replace(state, last_seq=seq, withdrawals=withdrawal.apply(state.withdrawals, event))
    return msgspec.structs.replace(state, last_seq=seq)


def ratings(state: EloState, model_id: str) -> tuple[Rating, ...]:
    """A model's ratings that count (not from an evaluation item that ended failed or cancelled), oldest first."""
    return tuple(r for r in state.history.get(model_id, ()) if state.withdrawals.counts(r.work_id))


def latest_elo(state: EloState, model_id: str) -> float | None:
    """The newest rating of a model that has one."""
    for rating in reversed(ratings(state, model_id)):
        if rating.elo is not None:
            return rating.elo
    return None


def by_config(state: EloState) -> dict[str, dict[str, float]]:
    """Latest Elo of each rated model, grouped by config ('' for models of unknown config)."""
    out: dict[str, dict[str, float]] = {}
    for model_id in state.history.keys():
        elo = latest_elo(state, model_id)
        if elo is not None:
            out.setdefault(state.configs.get(model_id, ""), {})[model_id] = elo
    return {config: dict(sorted(models.items())) for config, models in sorted(out.items())}


PROJECTION: Projection[EloState] = Projection(
    name="elo",
    version=VERSION,
    initial=EloState,
    apply=apply,
    reads=frozenset({EvaluationComplete.type_name(), TrainingComplete.type_name(), ModelPromoted.type_name(), *withdrawal.READS}),
)
