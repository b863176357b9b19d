"""Ratings on one scale as operators read them: `rr models`, `rr lineage`, `rr status`, from MODEL_RATED only."""

from __future__ import annotations

import datetime as dt

from cli.commands.lineage import format_lineage
from cli.commands.models import format_models, model_rows
from cli.commands.status import format_status
from cluster.distribution.failures import FailuresState
from eventbus import events as ev
from projections.bundle import fold_all_events
from projections.cluster import ClusterState
from projections.lineage import lineage
from projections.status_view import status_view
from tests.terms import in_term

ANCHOR = "hex8_2p-search16"
LOG: list[ev.Event] = [
    ev.TrainingComplete(model_id="m-1", work_id="t-1", node="n1", board_type="hex8", num_players=2),
    ev.EvaluationComplete(model_id="m-1", work_id="e-1", node="n1", opponent=ANCHOR, games=37, wins=31, losses=6,
                          win_rate=0.84, elo=290.0, gate=True, verdict="H1", llr=3.2),
    ev.EvaluationComplete(model_id=ANCHOR, work_id="e-1", node="n1", opponent="random", games=40, wins=39, losses=1,
                          win_rate=0.975, elo=636.0),
    ev.ModelRated(model_id=ANCHOR, board_type="hex8", num_players=2, elo=560.0, interval=150.0, games=40,
                  opponents=["random"], kind="anchor"),
    ev.ModelRated(model_id="m-1", board_type="hex8", num_players=2, elo=850.0, interval=170.0, games=77,
                  opponents=[ANCHOR, "random"], evaluation_work_id="e-1"),
    ev.ModelPromoted(model_id="m-1", board_type="hex8", num_players=2, sha256="ab" * 32, generation=1,
                     reason="SPRT accepted H1", evaluation_work_id="e-1"),
]


def state():  # type: ignore[no-untyped-def]
    return fold_all_events(enumerate(in_term(LOG), 1))


def test_rr_models_shows_the_rating_with_its_interval_and_the_scales_anchor() -> None:
    ps = state()
    [row] = model_rows(ps.models, ClusterState(), FailuresState(), dt.datetime.now(dt.UTC), ratings=ps.elo)
    assert (row.elo, row.elo_interval, row.anchor, row.anchor_elo) == (850.0, 170.0, ANCHOR, 560.0)
    text = format_models([row])
    assert "850 ± 170" in text and f"random play 0, pure-search anchor {ANCHOR} 560 ± 150" in text
    assert "290" not in text  # the gate's score difference is not a rating


def test_lineage_and_status_use_the_same_scale() -> None:
    ps = state()
    found = lineage(ps, "m-1")
    assert found is not None and found.rating is not None and found.rating.elo == 850.0
    assert "rated:     850 ± 170 Elo on the hex8_2p scale" in format_lineage(found)
    view = status_view(ps, now=dt.datetime.now(dt.UTC), node_id="n1")
    assert (view.models["hex8_2p"].elo, view.models["hex8_2p"].elo_interval) == (850.0, 170.0)
    assert view.elo == {"hex8_2p": {ANCHOR: 560.0, "m-1": 850.0}}
    assert "850 ± 170" in format_status(view)
