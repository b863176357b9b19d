"""The scheduling policy, as pure functions: capability matching, priority terms, assignment plans."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.sections.scheduler import PriorityWeights, SchedulerSettings
from services.leader.policy import (
    ConfigSignals,
    NodeView,
    WorkView,
    can_run,
    config_key,
    config_priority,
    curriculum_term,
    freshness_term,
    plan_assignments,
    rank,
    velocity_term,
)

S = SchedulerSettings()


def node(name: str = "n", **kw: object) -> NodeView:
    return NodeView(node=name, alive=True, **kw)  # type: ignore[arg-type]


def work(wid: str = "w", work_type: str = "selfplay", board: str = "hex8", **kw: object) -> WorkView:
    return WorkView(work_id=wid, work_type=work_type, board_type=board, num_players=2, **kw)  # type: ignore[arg-type]


# ---- capability matching (the seeds' GPU table) ------------------------------------------

@pytest.mark.parametrize(
    ("vram", "work_type", "board", "ok"),
    [
        (8, "selfplay", "hex8", True),
        (8, "selfplay", "square8", False),
        (16, "selfplay", "square8", True),
        (16, "training", "hex8", False),
        (24, "training", "hex8", True),
        (16, "selfplay", "hexagonal", False),
        (48, "selfplay", "hexagonal", True),
        (0, "selfplay", "hex8", True),  # CPU selfplay
        (0, "selfplay", "square8", True),
        (0, "selfplay", "hexagonal", False),
        (0, "training", "hex8", False),
    ],
)
def test_gpu_table(vram: float, work_type: str, board: str, ok: bool) -> None:
    assert can_run(node(vram_gb=vram), work(work_type=work_type, board=board), S) is ok


def test_roles_status_liveness_and_target() -> None:
    big = dict(vram_gb=80.0)
    assert not can_run(node(roles=("selfplay",), **big), work(work_type="training"), S)
    assert can_run(node(roles=("nn_training",), **big), work(work_type="training"), S)
    assert not can_run(node(roles=("coordinator",), **big), work(), S)
    assert not can_run(node(status="disabled", **big), work(), S)
    assert not can_run(node(status="maintenance", **big), work(), S)
    assert not can_run(NodeView(node="n", alive=False, **big), work(), S)
    assert not can_run(node("a", **big), work(target_node="b"), S)
    assert can_run(node("b", **big), work(target_node="b"), S)


def test_unlisted_node_takes_any_work_in_laptop_mode() -> None:
    assert can_run(node(configured=False, vram_gb=0), work(work_type="training"), S)


# ---- priority terms -------------------------------------------------------------------------

def test_curriculum_term_is_relative_to_the_largest_weight() -> None:
    cur = {"hex8_2p": 2.0, "square8_2p": 1.0}
    assert curriculum_term("hex8_2p", cur) == 1.0
    assert curriculum_term("square8_2p", cur) == 0.5
    assert curriculum_term("hex8_3p", cur) == 0.5  # absent: weight 1.0
    assert curriculum_term("x", {}) == 1.0
    assert curriculum_term("neg", {"neg": -3.0}) == 0.0


def test_freshness_term() -> None:
    assert freshness_term(None, 6.0) == 1.0
    assert freshness_term(0.0, 6.0) == 0.0
    assert freshness_term(3.0, 6.0) == 0.5
    assert freshness_term(60.0, 6.0) == 1.0
    assert freshness_term(-1.0, 6.0) == 0.0  # clock skew never makes data fresher than new


def test_velocity_term() -> None:
    assert velocity_term(25.0, 50.0) == 0.5
    assert velocity_term(500.0, 50.0) == 1.0
    assert velocity_term(-500.0, 50.0) == -1.0


def test_config_priority_combines_weighted_terms() -> None:
    w = PriorityWeights(curriculum=1.0, freshness=0.5, elo_velocity=0.25, freshness_horizon_h=4.0, elo_velocity_ref=100)
    sig = ConfigSignals(hours_since_newest_games=2.0, elo_per_hour=50.0)
    assert config_priority("hex8_2p", sig, {"hex8_2p": 1.0, "sq": 2.0}, w) == pytest.approx(0.5 + 0.25 + 0.125)


def test_rank_explicit_priority_then_config_priority_then_age() -> None:
    signals = {"hex8_2p": ConfigSignals(hours_since_newest_games=0.0), "square8_2p": ConfigSignals()}
    items = [
        work("fresh-old", order=1),
        work("stale", board="square8", order=2),
        work("urgent", order=3, priority=10),
        work("fresh-new", order=4),
    ]
    assert [w.work_id for w in rank(items, signals, S)] == ["urgent", "stale", "fresh-old", "fresh-new"]
    assert config_key("hex8", 2) == "hex8_2p"


# ---- plans: properties ----------------------------------------------------------------------

nodes_st = st.lists(
    st.builds(
        NodeView,
        node=st.sampled_from([f"n{i}" for i in range(8)]),
        alive=st.booleans(),
        status=st.sampled_from(["ready", "ready", "disabled", "maintenance"]),
        roles=st.sampled_from([("mixed",), ("selfplay",), ("nn_training",), ("coordinator",), ("cpu_selfplay",)]),
        vram_gb=st.sampled_from([0.0, 8.0, 16.0, 24.0, 80.0]),
        max_parallel_jobs=st.integers(1, 4),
        running=st.integers(0, 4),
        configured=st.booleans(),
    ),
    max_size=8,
    unique_by=lambda n: n.node,
)
items_st = st.lists(
    st.builds(
        WorkView,
        work_id=st.uuids().map(str),
        work_type=st.sampled_from(["selfplay", "training", "evaluation", "sync"]),
        board_type=st.sampled_from(["hex8", "square8", "hexagonal"]),
        num_players=st.sampled_from([2, 3, 4]),
        priority=st.one_of(st.none(), st.integers(0, 5)),
        target_node=st.one_of(st.none(), st.sampled_from(["n0", "n1"])),
        order=st.integers(0, 10_000),
    ),
    max_size=30,
    unique_by=lambda w: w.work_id,
)
signals_st = st.dictionaries(
    st.sampled_from([config_key(b, p) for b in ("hex8", "square8", "hexagonal") for p in (2, 3, 4)]),
    st.builds(ConfigSignals, hours_since_newest_games=st.one_of(st.none(), st.floats(0, 48)),
              elo_per_hour=st.floats(-200, 200)),
)


@settings(max_examples=300, deadline=None)
@given(nodes=nodes_st, items=items_st, signals=signals_st)
def test_plan_never_overfills_never_mismatches_and_respects_rank(nodes, items, signals) -> None:
    plan = plan_assignments(items, nodes, signals, S)
    by_node = {n.node: n for n in nodes}
    by_id = {w.work_id: w for w in items}
    assert len({w for w, _ in plan}) == len(plan), "an item assigned twice"
    for n in nodes:  # capacity
        added = sum(1 for _, target in plan if target == n.node)
        assert added == 0 or n.running + added <= n.max_parallel_jobs
    for wid, target in plan:  # eligibility, stated independently of can_run
        n, w = by_node[target], by_id[wid]
        assert n.alive and n.status == "ready"
        assert w.target_node in (None, n.node)
        if n.configured and w.work_type == "training":
            assert n.vram_gb >= 24 and set(n.roles) & {"mixed", "nn_training"}
        if n.configured and n.vram_gb == 0:
            assert w.work_type != "training"
            assert not (w.work_type == "selfplay" and w.board_type == "hexagonal")
    order = [w.work_id for w in rank(items, signals, S)]
    assigned = dict(plan)
    for i, wid in enumerate(order):  # no lower-ranked item took a slot a higher-ranked one could use
        if wid in assigned:
            continue
        for later in order[i + 1:]:
            if later in assigned:
                assert not can_run(by_node[assigned[later]], by_id[wid], S)


def reference_plan(items, nodes, signals) -> list[tuple[str, str]]:
    """The plan by definition: every node scanned for every item, in rank order."""
    load = {n.node: n.running for n in nodes}
    plan = []
    for item in rank(items, signals, S):
        free = [n for n in nodes if load[n.node] < n.max_parallel_jobs and can_run(n, item, S)]
        if free:
            best = min(free, key=lambda n: (load[n.node] / n.max_parallel_jobs, -n.vram_gb, n.node))
            load[best.node] += 1
            plan.append((item.work_id, best.node))
    return plan


@settings(max_examples=300, deadline=None)
@given(nodes=nodes_st, items=items_st, signals=signals_st)
def test_the_heap_planner_plans_exactly_what_scanning_every_node_would(nodes, items, signals) -> None:
    assert plan_assignments(items, nodes, signals, S) == reference_plan(items, nodes, signals)


def test_a_large_plan_is_fast_and_fills_every_slot() -> None:
    nodes = [node(f"n{i:04d}", max_parallel_jobs=4, configured=False) for i in range(1000)]
    items = [WorkView(work_id=f"w{i}", work_type="selfplay", board_type="hex8", num_players=2, order=i) for i in range(20_000)]
    plan = plan_assignments(items, nodes, {}, S)
    assert len(plan) == 4000 and [w for w, _ in plan] == [f"w{i}" for i in range(4000)]
    assert {n for _, n in plan[:1000]} == {n.node for n in nodes}  # spread before stacking
