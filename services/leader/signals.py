"""The facts behind each config's priority, pure: when its newest games were made and how fast its Elo moves.

Folded from the log with the queue (services/leader/queue.py), so a new leader has them as
soon as it has read the log. Elo velocity is the slope of the config's promoted models' ratings
over the last `elo_velocity_window_h`: a config whose promotions keep climbing gets more selfplay.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from eventbus.events import EvaluationComplete, Event, ModelPromoted, SelfplayComplete
from projections.pmap import PMap
from services.leader.policy import ConfigSignals, config_key

MAX_ELO_POINTS = 32  # promotions kept per config: enough for any sensible window
SIGNAL_EVENTS = (SelfplayComplete, EvaluationComplete, ModelPromoted)  # all that `apply` looks at


class ConfigFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One config's newest games and its promoted models' ratings (time, Elo), oldest first."""

    newest_games_at: dt.datetime | None = None
    promoted_elo: tuple[tuple[dt.datetime, float], ...] = ()


class SignalFacts(msgspec.Struct, frozen=True, kw_only=True):
    """Per config facts, and each model's latest rating until a promotion places it in its config."""

    configs: PMap[str, ConfigFacts] = msgspec.field(default_factory=PMap)
    model_elo: PMap[str, float] = msgspec.field(default_factory=PMap)  # model id -> latest rating

    @staticmethod
    def reads(event: Event) -> bool:
        """Whether `apply` looks at this event at all."""
        return isinstance(event, SIGNAL_EVENTS)


def apply(facts: SignalFacts, event: Event) -> SignalFacts:
    """The facts after one event (one without a time says nothing about when: it is passed over)."""
    if event.ts is None and isinstance(event, (SelfplayComplete, ModelPromoted)):
        return facts
    if isinstance(event, SelfplayComplete):
        key = config_key(event.board_type, event.num_players)
        config = facts.configs.get(key, ConfigFacts())
        if config.newest_games_at is None or event.ts > config.newest_games_at:
            config = msgspec.structs.replace(config, newest_games_at=event.ts)
        return msgspec.structs.replace(facts, configs=facts.configs.set(key, config))
    if isinstance(event, EvaluationComplete) and event.elo is not None:
        return msgspec.structs.replace(facts, model_elo=facts.model_elo.set(event.model_id, event.elo))
    if isinstance(event, ModelPromoted):
        key = config_key(event.board_type, event.num_players)
        elo = facts.model_elo.get(event.model_id)
        if elo is None:
            return facts  # a promotion without a rating says nothing about speed
        config = facts.configs.get(key, ConfigFacts())
        points = (config.promoted_elo + ((event.ts, elo),))[-MAX_ELO_POINTS:]
        return msgspec.structs.replace(facts, configs=facts.configs.set(key, msgspec.structs.replace(config, promoted_elo=points)))
    return facts


def elo_per_hour(points: tuple[tuple[dt.datetime, float], ...], now: dt.datetime, window_h: float) -> float:
    """Elo change per hour between the oldest and newest promotion within the window; 0 with fewer than two."""
    recent = [(at, elo) for at, elo in points if (now - at).total_seconds() <= window_h * 3600]
    if len(recent) < 2:
        return 0.0
    (first_at, first), (last_at, last) = recent[0], recent[-1]
    hours = (last_at - first_at).total_seconds() / 3600
    return (last - first) / hours if hours > 0 else 0.0


def config_signals(facts: SignalFacts, now: dt.datetime, window_h: float) -> dict[str, ConfigSignals]:
    """What policy.rank reads per config: hours since the newest games and Elo per hour."""
    return {
        key: ConfigSignals(
            hours_since_newest_games=None if c.newest_games_at is None else (now - c.newest_games_at).total_seconds() / 3600,
            elo_per_hour=elo_per_hour(c.promoted_elo, now, window_h),
        )
        for key, c in facts.configs.items()
    }
