"""Quarantine: the lineage closure of a node's, a batch's or a model's outputs, checked against a hand-built fixture."""

from __future__ import annotations

import datetime as dt

import msgspec

from eventbus import events as ev
from projections import models, taint
from projections.base import fold_events
from tests.terms import in_term

T = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def _batch(batch_id: str, node: str, at: dt.datetime, model_id: str | None = None) -> ev.Event:
    return ev.SelfplayComplete(batch_id=batch_id, work_id=f"w-{batch_id}", node=node, board_type="hex8", num_players=2,
                               num_games=10, model_id=model_id, ts=at)


def _evaluation(work_id: str, node: str, at: dt.datetime, model_id: str, opponent: str) -> ev.Event:
    return ev.EvaluationComplete(model_id=model_id, work_id=work_id, node=node, opponent=opponent, games=10, wins=6,
                                 losses=4, win_rate=0.6, ts=at)


def _model(model_id: str, node: str, at: dt.datetime, batches: list[str], parent: str | None = None) -> ev.Event:
    return ev.TrainingComplete(model_id=model_id, work_id=f"w-{model_id}", node=node, board_type="hex8", num_players=2,
                               input_batches=batches, parent_model=parent, ts=at)


# The fixture: gpu-bad went bad at T. Its outputs since then, and everything derived from them, are tainted.
LINEAGE: list[ev.Event] = [
    _batch("b1", "gpu-ok", T - HOUR),             # clean: another node
    _batch("b2", "gpu-bad", T - HOUR),            # clean: before `since`
    _batch("b3", "gpu-bad", T + dt.timedelta(minutes=1)),  # root
    _model("m1", "gpu-ok", T - HOUR / 2, ["b1", "b2"]),     # clean
    _model("m2", "gpu-ok", T + 2 * HOUR, ["b1", "b3"]),      # via batch b3
    _batch("b4", "gpu-ok", T + 3 * HOUR, model_id="m2"),    # games m2 played: via model m2
    _model("m3", "gpu-ok", T + 4 * HOUR, ["b4"], parent="m1"),  # via batch b4
    _model("m4", "gpu-ok", T + 4 * HOUR, ["b1"], parent="m2"),  # via model m2 (its parent)
    _model("m5", "gpu-bad", T + 5 * HOUR, ["b1"]),           # root: trained on the bad node
    _batch("b5", "gpu-ok", T + 5 * HOUR, model_id="m1"),    # clean: games of a clean model
    _model("m6", "gpu-ok", T + 6 * HOUR, ["b5", "b2"], parent="m1"),  # clean
    # Evaluations: outputs of the node that ran them, and of every model that played in them.
    _evaluation("e1", "gpu-bad", T - HOUR, "m1", "random"),       # clean: before `since`
    _evaluation("e2", "gpu-bad", T + 5 * HOUR, "m1", "random"),   # root: run on the bad node
    _evaluation("e3", "gpu-ok", T + 6 * HOUR, "m6", "m2"),        # via model m2, the opponent
    _evaluation("e3", "gpu-ok", T + 6 * HOUR, "m6", "m1"),        # (the same item's second match)
    _evaluation("e4", "gpu-ok", T + 6 * HOUR, "m3", "m1"),        # via model m3, the candidate
    _evaluation("e5", "gpu-ok", T + 6 * HOUR, "m6", "m1"),        # clean: clean players on a clean node
]


def _state(*extra: ev.Event) -> taint.TaintState:
    return fold_events(taint.PROJECTION, enumerate([*LINEAGE, *extra], 1))


def _quarantine(qid: str, kind: str, target: str, since: dt.datetime | None = None, reason: str = "bad gpu") -> ev.Event:
    return ev.OutputsQuarantined(quarantine_id=qid, kind=kind, target=target, since=since, reason=reason, requested_by="ops")


def test_quarantining_a_node_taints_exactly_the_lineage_closure_of_its_outputs_since_then() -> None:
    result = taint.tainted(_state(_quarantine("q1", "node", "gpu-bad", since=T)))
    assert set(result.batches) == {"b3", "b4"}
    assert set(result.models) == {"m2", "m3", "m4", "m5"}
    assert result.models["m3"] == taint.Taint(quarantine_id="q1", reason="bad gpu", via="batch b4")
    assert result.models["m4"].via == "model m2" and result.batches["b4"].via == "model m2"
    assert result.batches["b3"].via == "" and result.models["m5"].via == ""
    assert set(result.evaluations) == {"e2", "e3", "e4"}
    assert (result.evaluations["e2"].via, result.evaluations["e3"].via, result.evaluations["e4"].via) == ("", "model m2", "model m3")


def test_a_batch_or_a_model_quarantine_taints_what_derives_from_it_only() -> None:
    by_batch = taint.tainted(_state(_quarantine("q", "batch", "b2")))
    # b2 trained m1; m1 played b5 and is the parent of m3 and m6.
    assert set(by_batch.batches) == {"b2", "b5"} and set(by_batch.models) == {"m1", "m3", "m6"}
    by_model = taint.tainted(_state(_quarantine("q", "model", "m1")))
    assert set(by_model.models) == {"m1", "m3", "m6"} and set(by_model.batches) == {"b5"}
    assert set(by_model.evaluations) == {"e1", "e2", "e3", "e4", "e5"}  # m1 played in every one
    assert set(taint.tainted(_state(_quarantine("q", "model", "m2"))).evaluations) == {"e3", "e4"}  # m3 descends from m2


def test_a_lifted_quarantine_taints_nothing_and_an_unknown_lift_is_an_anomaly() -> None:
    state = _state(_quarantine("q1", "node", "gpu-bad", since=T), ev.QuarantineLifted(quarantine_id="q1", reason="false alarm"))
    assert taint.tainted(state) == taint.Tainted()
    assert state.quarantines.get("q1").lifted_reason == "false alarm"
    odd = _state(ev.QuarantineLifted(quarantine_id="nope"), _quarantine("q2", "node", "gpu-bad"))
    assert odd.anomaly_count == 2 and "needs `since`" in odd.anomalies[-1].reason


def test_the_first_quarantine_to_reach_an_output_gives_its_reason() -> None:
    state = _state(_quarantine("q1", "model", "m2", reason="first"), _quarantine("q2", "node", "gpu-bad", since=T, reason="second"))
    result = taint.tainted(state)
    assert result.models["m4"].reason == "first" and result.models["m5"].reason == "second"


def test_a_tainted_best_rolls_back_to_the_newest_untainted_promoted_model_of_its_config() -> None:
    promotions = [
        ev.ModelPromoted(model_id=m, board_type="hex8", num_players=2, sha256=m * 32, generation=g)
        for g, m in enumerate(["m1", "m6", "m2"], 1)
    ]
    state = fold_events(models.PROJECTION, enumerate(in_term(promotions), 1))
    assert state.promoted == {"hex8_2p": "m2"}
    tainted = taint.tainted(_state(_quarantine("q1", "node", "gpu-bad", since=T)))
    assert taint.rollbacks(state, tainted) == [("hex8_2p", "m2", "m6")]
    everything = taint.tainted(_state(_quarantine("q", "batch", "b1"), _quarantine("q2", "model", "m6")))
    assert taint.rollbacks(state, everything) == [("hex8_2p", "m2", "")]  # nothing clean left: no rollback target
    assert taint.rollbacks(state, taint.Tainted()) == []


def test_training_skips_tainted_batches_and_a_tainted_candidate_is_never_evaluated() -> None:
    from eventbus.events import WorkAdded
    from services.leader.pipeline import decide
    from tests.test_scheduler_pipeline import SETTINGS, batch, fold, trained

    view = fold([batch(1), batch(2), batch(3), _quarantine("q", "batch", "b2")])
    [item] = decide(view, SETTINGS)
    assert isinstance(item, WorkAdded) and item.input_batch_ids() == ["b1", "b3"]
    tainted_view = fold([item, trained(item), _quarantine("q2", "model", str(item.params["model_id"]))], view)
    assert decide(tainted_view, SETTINGS) == []  # no evaluation of a tainted candidate (nor a new training)
    lifted = fold([ev.QuarantineLifted(quarantine_id="q2")], tainted_view)
    assert [e.work_type for e in decide(lifted, SETTINGS)] == ["evaluation"]  # type: ignore[attr-defined]


def test_a_tainted_evaluation_promotes_nothing_until_its_quarantine_is_lifted() -> None:
    from services.leader.pipeline import decide
    from tests.test_scheduler_pipeline import ANCHOR, SETTINGS, candidate_view, evaluated, fold

    view, model = candidate_view()
    won = msgspec.structs.replace(evaluated(model, ANCHOR, 30, 5), ts=T + HOUR)  # run on n1, which went bad at T
    quarantined = fold([won, _quarantine("q", "node", "n1", since=T)], view)
    assert set(quarantined.tainted().evaluations) == {f"eval-{model}"} and not quarantined.tainted().models
    assert decide(quarantined, SETTINGS) == []
    [promoted] = decide(fold([ev.QuarantineLifted(quarantine_id="q")], quarantined), SETTINGS)
    assert isinstance(promoted, ev.ModelPromoted) and promoted.model_id == model


def test_sync_does_not_copy_a_tainted_batch() -> None:
    from services.leader.transfers import plan_transfers
    from tests.test_sync_planner import SETTINGS, T0, batch, fleet, folded

    state = folded([batch("b1", "n1"), batch("b2", "n1")])
    plans = plan_transfers(state, fleet({"n1", "n2"}, {"n1", "n2"}), T0, SETTINGS, frozenset({"b2"}))
    assert [p.batch_id for p in plans] == ["b1"]


def test_the_status_the_dashboard_reads_shows_a_tainted_best_and_why() -> None:
    from projections import bundle
    from projections.status_view import status_view

    promoted = ev.ModelPromoted(model_id="m2", board_type="hex8", num_players=2, sha256="ab" * 32, generation=2)
    state = bundle.fold_all_events(list(enumerate(in_term([*LINEAGE, promoted, _quarantine("q1", "node", "gpu-bad", since=T)]), 1)))
    view = status_view(state, now=T + 7 * HOUR, node_id="ops")
    assert view.models["hex8_2p"].taint == "bad gpu (quarantine q1, via batch b3)"


def test_lineage_marks_each_evaluation_a_tainted_model_played_in_and_why() -> None:
    from cli.commands.lineage import format_lineage
    from projections import bundle
    from projections.lineage import lineage

    state = bundle.fold_all_events(list(enumerate([*LINEAGE, _quarantine("q1", "node", "gpu-bad", since=T)], 1)))
    found = lineage(state, "m6")
    assert found is not None and found.taint is None  # m6 itself is clean ...
    assert set(found.tainted_evaluations) == {"e3"}  # ... but its match against m2 does not count
    lines = format_lineage(found).splitlines()
    assert [line for line in lines if "TAINTED" in line] == [line for line in lines if "by work e3" in line]
    assert all(line.endswith("TAINTED: bad gpu (quarantine q1, via model m2)") for line in lines if "by work e3" in line)
    assert sum("by work e3" in line for line in lines) == 2
