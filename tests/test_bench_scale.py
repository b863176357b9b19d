"""bench_membership's scale curve: its pure costs at a fleet size, and how their growth is stated."""

from __future__ import annotations

from ops.bench.bench_membership import fold_costs, growth, round_cost_ms


def test_the_pure_costs_of_a_fleet_size_are_measured_on_every_node_alive() -> None:
    costs = fold_costs(200, 5.0, beats=400)  # it asserts that the sweep finds nobody silent
    assert costs["fold_us_per_beat"] > 0 and costs["sweep_ms"] >= 0
    assert round_cost_ms(200, 2) > 0  # it asserts that the round plans exactly the one pending item


def test_growth_says_linear_as_one_and_flat_as_one_over_the_node_ratio() -> None:
    small: dict[str, object] = {"nodes": 1000, "cpu_share_ours": 0.01, "cpu_share_ceiling": 0.01, "fold_us_per_beat": 4.0, "sweep_ms": 0.1,
             "assign_round_ms": 2.0}
    large: dict[str, object] = {"nodes": 10000, "cpu_share_ours": 0.1, "cpu_share_ceiling": 0.2, "fold_us_per_beat": 4.0, "sweep_ms": 1.0,
             "assign_round_ms": 40.0}
    assert growth([small, large]) == {"cpu_share_ours": 1.0, "cpu_share_ceiling": 2.0, "fold_us_per_beat": 0.1, "sweep_ms": 1.0,
                                      "assign_round_ms": 2.0}
    assert growth([small]) == {}
