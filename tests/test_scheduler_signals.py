"""Priority signals folded from the log: data freshness and Elo velocity per config, and their effect on ranking."""

from __future__ import annotations

import datetime as dt

from config.sections.scheduler import SchedulerSettings
from eventbus.events import EvaluationComplete, HostOnline, ModelPromoted, SelfplayComplete, WorkAdded
from services.leader import queue
from services.leader.decisions import assignment_round
from services.leader.signals import SignalFacts, apply, config_signals, elo_per_hour
from tests.terms import TERM, decided

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def selfplay(board: str, hours: float) -> SelfplayComplete:
    return SelfplayComplete(batch_id=f"b-{board}-{hours}", work_id="w", node="n1", board_type=board, num_players=2,
                            num_games=10, ts=at(hours))


def rated_promotion(model: str, board: str, elo: float, hours: float) -> list:
    return [EvaluationComplete(model_id=model, work_id="e", node="n1", opponent="best", games=10, wins=6, losses=4, elo=elo, ts=at(hours)),
            ModelPromoted(model_id=model, board_type=board, num_players=2, sha256="0" * 64, ts=at(hours), epoch=1)]


def fold(events: list) -> SignalFacts:
    facts = SignalFacts()
    for event in events:
        facts = apply(facts, event)
    return facts


def test_freshness_is_hours_since_the_configs_newest_games_whatever_order_they_arrive_in() -> None:
    facts = fold([selfplay("hex8", 3.0), selfplay("hex8", 1.0), selfplay("square8", 0.0)])
    signals = config_signals(facts, at(5.0), 24.0)
    assert signals["hex8_2p"].hours_since_newest_games == 2.0
    assert signals["square8_2p"].hours_since_newest_games == 5.0


def test_elo_velocity_is_the_slope_of_recent_promotions_and_zero_with_fewer_than_two() -> None:
    facts = fold(rated_promotion("m1", "hex8", 1000, 0.0) + rated_promotion("m2", "hex8", 1100, 2.0)
                 + rated_promotion("s1", "square8", 1200, 1.0))
    signals = config_signals(facts, at(3.0), 24.0)
    assert signals["hex8_2p"].elo_per_hour == 50.0
    assert signals["square8_2p"].elo_per_hour == 0.0
    # Outside the window, old promotions stop counting.
    assert elo_per_hour(facts.configs.get("hex8_2p").promoted_elo, at(25.0), 24.0) == 0.0


def test_a_promotion_without_a_rating_adds_no_point() -> None:
    facts = fold([ModelPromoted(model_id="m", board_type="hex8", num_players=2, sha256="0" * 64, ts=at(0), epoch=1)])
    assert facts.configs.get("hex8_2p") is None


def test_the_assigner_gives_the_stalest_config_the_only_free_slot() -> None:
    # Same curriculum weight; square8's newest games are 5 h old, hex8's are fresh: square8 goes first
    # although its item was added later.
    events = [HostOnline(node="n1", ts=at(0)), selfplay("hex8", 5.0), selfplay("square8", 0.0),
              WorkAdded(work_id="w-hex", work_type="selfplay", board_type="hex8", num_players=2, ts=at(5.0)),
              WorkAdded(work_id="w-square", work_type="selfplay", board_type="square8", num_players=2, ts=at(5.0))]
    state = queue.apply(queue.QueueState(), TERM, 0)  # the term whose HOST_ONLINE this is
    for seq, event in enumerate(events, 1):
        state = queue.apply(state, decided(event), seq)
    settings = SchedulerSettings(default_max_parallel_jobs=1)
    [decision] = assignment_round(state, at(5.0), None, settings)
    assert decision.work_id == "w-square"
    # With fresh square8 data the older item wins again (order breaks the tie).
    state = queue.apply(state, selfplay("square8", 5.0), len(events) + 1)
    [decision] = assignment_round(state, at(5.0), None, settings)
    assert decision.work_id == "w-hex"


def test_an_assignment_carries_the_trace_of_its_items_work_added() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    state = queue.apply(queue.apply(queue.QueueState(), TERM, 0), decided(HostOnline(node="n1", ts=at(0))), 1)
    state = queue.apply(state, WorkAdded(work_id="w", work_type="selfplay", board_type="hex8", num_players=2, trace=traceparent), 2)
    [decision] = assignment_round(state, at(0), None, SchedulerSettings())
    assert decision.event.trace == traceparent


def test_the_priority_facts_survive_the_queue_snapshot() -> None:
    from projections.snapshot import decode_snapshot, encode_snapshot

    state = queue.QueueState()
    for seq, event in enumerate([selfplay("hex8", 1.0), *rated_promotion("m1", "hex8", 1000, 0.0),
                                 *rated_promotion("m2", "hex8", 1100, 2.0)], 1):
        state = queue.apply(state, event, seq)
    loaded = decode_snapshot(queue.PROJECTION, encode_snapshot(queue.PROJECTION, state))
    assert loaded is not None and loaded.state == state
    assert config_signals(loaded.state.facts, at(3.0), 24.0)["hex8_2p"].elo_per_hour == 50.0
