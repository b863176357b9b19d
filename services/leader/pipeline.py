"""The loop that runs itself: enough new games -> training, a candidate -> evaluation, a winner -> promotion.

Only results that count are used (projections/withdrawal.py): batches, candidates and scores of
items that ended failed or cancelled are never trained on, evaluated or promoted.

`decide(view, settings)` is pure: given what the log says (services/leader/pipeline_view.py)
it returns the leader's next decisions, and returns none of them again once the view has seen
them, so the leader may ask as often as it likes. `pipeline_loop` is the leader's shell.

Training items name their batches in WORK_ADDED's `inputs`, with the paths as the nodes that wrote
them reported them: on a one-node cluster they are local files; on a fleet the data sync must have
copied them to the trainer.
"""

from __future__ import annotations

import datetime as dt

from cluster.leadership.term import Term
from config.sections.pipeline import PipelineSettings
from eventbus.events import BatchInput, Event, ModelPromoted, ModelRated, WorkAdded, utcnow
from servicekit.runtime import ServiceContext
from servicekit.taintoffloop import tainted_off_loop
from services.leader.backoff import resting_configs
from services.leader.leaderfold import FoldingDecider
from services.leader.pipeline_view import READS, Best, Candidate, PipelineView, apply
from workload.ratings import RANDOM, ZERO, Rated, Result, anchor_id, rate
from workload.sprt import H1, verdict

MAX_TRAINING_BATCHES = 50  # newest batches one training item reads (within WORK_ADDED's inputs bound)


def decide(view: PipelineView, settings: PipelineSettings, now: dt.datetime | None = None) -> list[Event]:
    """Every decision the pipeline owes now: training items, evaluation items, ratings, promotions."""
    return [*training_items(view, settings, now), *evaluation_items(view, settings), *anchor_ratings(view),
            *candidate_ratings(view), *promotions(view, settings)]


def training_items(view: PipelineView, settings: PipelineSettings, now: dt.datetime | None = None) -> list[Event]:
    """One training item per config with enough new samples, no training pending or running, and not resting.

    A config whose last n training items failed gets the next one only `training_backoff.delay(n)`
    after the newest failure (with `now` given; None: no rest), so a training that always fails
    is not re-added at once, over and over.
    """
    busy = {i.config for i in view.open_items() if i.work_type == "training"}
    if now is not None:
        busy |= set(resting_configs(view.training_failures, now, settings.training_backoff))
    trained_through = view.trained_through
    out: list[Event] = []
    for config in sorted(view.batches):
        batches = view.live_batches(config)
        through = trained_through.get(config, 0)
        if not batches or config in busy or sum(b.samples for b in batches if b.seq > through) < settings.min_new_samples:
            continue
        used = batches[-MAX_TRAINING_BATCHES:]
        number = view.trainings_added.get(config, 0) + 1
        best = view.best.get(config)
        params: dict[str, str | int | float | bool] = {"model_id": f"{config}-t{number}-s{used[-1].seq}"}
        if best is not None:
            params["parent_model"] = best.model_id
        board, players = batches[-1].board_type, batches[-1].num_players
        out.append(WorkAdded(
            work_id=f"train-{config}-{number}-s{used[-1].seq}", work_type="training", board_type=board,
            num_players=players, params=params, requested_by="pipeline",
            inputs=[BatchInput(batch_id=b.batch_id, path=b.path) for b in used],
        ))
    return out


def evaluation_items(view: PipelineView, settings: PipelineSettings) -> list[Event]:
    """One evaluation item per new candidate: the SPRT gate against the best (or the anchor), and rating matches."""
    out: list[Event] = []
    gate = settings.gate
    for candidate in sorted(view.live_candidates(), key=lambda c: c.seq):
        if candidate.evaluation_added or candidate.model_id in view.promoted or _superseded(view, candidate):
            continue
        best = view.best.get(candidate.config)
        anchor = anchor_id(candidate.board_type, candidate.num_players, settings.evaluation_sims)
        out.append(WorkAdded(
            work_id=f"eval-{candidate.model_id}", work_type="evaluation", board_type=candidate.board_type,
            num_players=candidate.num_players, num_games=settings.evaluation_games, requested_by="pipeline",
            # The path is the trainer's; an evaluator elsewhere fetches the candidate from the models
            # bucket by model id and checks it against this SHA-256 (services/worker/candidates.py).
            params={"candidate": candidate.path, "candidate_sha256": candidate.sha256,
                    "candidate_size": candidate.size_bytes, "model_id": candidate.model_id,
                    "best_model": best.model_id if best else "none", "sims": settings.evaluation_sims,
                    "elo0": gate.elo0, "elo1": gate.elo1, "alpha": gate.alpha, "beta": gate.beta,
                    "max_games": gate.max_games, "rate_anchor": anchor not in view.ratings},
            trace=candidate.trace,  # training -> evaluation -> promotion: one trace
        ))
    return out


def anchor_ratings(view: PipelineView) -> list[Event]:
    """The pure-search anchor of a config, rated once from its games against random play."""
    out: list[Event] = []
    for anchor, games in sorted(view.anchor_games.items()):
        if anchor in view.ratings or not view.withdrawals.counts(games.score.work_id):
            continue
        s = games.score
        rated = rate([Result(opponent=ZERO, wins=s.wins, losses=s.losses, draws=s.draws)])
        if rated is not None:
            out.append(ModelRated(model_id=anchor, board_type=games.board_type, num_players=games.num_players,
                                  elo=rated.elo, interval=rated.interval, games=rated.games, opponents=[RANDOM],
                                  kind="anchor", evaluation_work_id=s.work_id))
    return out


def candidate_ratings(view: PipelineView) -> list[Event]:
    """Each evaluated candidate, rated from all its matches against players already on the scale."""
    out: list[Event] = []
    for candidate in sorted(view.live_candidates(), key=lambda c: c.seq):
        if not candidate.evaluated or candidate.model_id in view.ratings or not candidate.scores:
            continue
        if any(_known(view, s.opponent) is None and s.opponent in view.anchor_games for s in candidate.scores):
            continue  # the anchor's own rating is owed first (decided alongside, folded next round)
        # Opponents never rated (models from before ratings existed) cannot place it on the scale.
        results = [Result(opponent=rating, wins=s.wins, losses=s.losses, draws=s.draws)
                   for s in candidate.scores if (rating := _known(view, s.opponent)) is not None]
        opponents = {s.opponent for s in candidate.scores if _known(view, s.opponent) is not None}
        rated = rate(results)
        if rated is None:
            continue
        out.append(ModelRated(
            model_id=candidate.model_id, board_type=candidate.board_type, num_players=candidate.num_players,
            elo=rated.elo, interval=rated.interval, games=rated.games, opponents=sorted(opponents),
            kind="candidate", evaluation_work_id=candidate.scores[-1].work_id, trace=candidate.trace,
        ))
    return out


def _known(view: PipelineView, player: str) -> Rated | None:
    if player == RANDOM:
        return ZERO
    rating = view.ratings.get(player)
    if rating is None:
        return None
    return Rated(elo=rating.elo, interval=rating.interval)


def _superseded(view: PipelineView, candidate: Candidate) -> bool:
    """Whether the config's best is as new as the candidate (or newer): it may no longer be promoted."""
    best = view.best.get(candidate.config)
    return best is not None and candidate.seq <= best.trained_seq


def gate_opponent(candidate: Candidate, best: Best | None, settings: PipelineSettings) -> str:
    """Whom a candidate must beat: the config's best, or the pure-search anchor at equal simulations."""
    return best.model_id if best else anchor_id(candidate.board_type, candidate.num_players, settings.evaluation_sims)


def promotion_reason(candidate: Candidate, best: Best | None, settings: PipelineSettings) -> str | None:
    """Why the candidate is better than the gate opponent by the SPRT, None while it is not shown to be."""
    opponent = gate_opponent(candidate, best, settings)
    gate = settings.gate
    for score in reversed(candidate.scores):  # the newest match against that opponent counts
        if score.opponent == opponent:
            v = verdict(score.wins, score.losses, score.draws, gate)
            if v.result != H1:
                return None
            return (f"SPRT accepted H1 (elo1 {gate.elo1:g} over elo0 {gate.elo0:g}, alpha {gate.alpha:g}, "
                    f"beta {gate.beta:g}) vs {opponent}: {score.wins}-{score.losses}-{score.draws} in {score.games} "
                    f"games, LLR {v.llr:.2f} >= {v.upper:.2f} (evaluation {score.work_id})")
    return None


def promotions(view: PipelineView, settings: PipelineSettings) -> list[Event]:
    """At most one promotion per config: its newest candidate that beat the current best."""
    out: list[Event] = []
    by_config: dict[str, list[Candidate]] = {}
    for candidate in view.live_candidates():
        if candidate.model_id not in view.promoted and not _superseded(view, candidate):
            by_config.setdefault(candidate.config, []).append(candidate)
    for config, candidates in sorted(by_config.items()):
        best = view.best.get(config)
        for candidate in sorted(candidates, key=lambda c: -c.seq):
            reason = promotion_reason(candidate, best, settings)
            if reason is None:
                continue
            out.append(ModelPromoted(
                model_id=candidate.model_id, board_type=candidate.board_type, num_players=candidate.num_players,
                sha256=candidate.sha256, size_bytes=candidate.size_bytes, generation=(best.generation if best else 0) + 1,
                reason=reason, evaluation_work_id=_evaluation_work(candidate, best, settings),
                previous_model=best.model_id if best else None,
                trace=candidate.trace,
            ))
            break
    return out


def _evaluation_work(candidate: Candidate, best: Best | None, settings: PipelineSettings) -> str | None:
    opponent = gate_opponent(candidate, best, settings)
    return next((s.work_id for s in reversed(candidate.scores) if s.opponent == opponent), None)


async def pipeline_loop(ctx: ServiceContext, term: Term) -> None:
    """The leader's pipeline: fold the log, publish what `decide` owes, until the term ends."""
    settings: PipelineSettings = ctx.config.pipeline
    if not settings.enabled:
        return
    decider = FoldingDecider(
        "pipeline", ctx, term, PipelineView(), apply, READS, lambda view: decide(view, settings, utcnow()),
        settings.decide_every_s, prepare=lambda view: tainted_off_loop(view.taint),
    )
    await decider.run()
