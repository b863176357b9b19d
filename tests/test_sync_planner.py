"""The sync planner's pure core: who gets which batch, in which order, never twice; training targets from the hosts file."""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from config.hosts import HostEntry, HostsConfig
from config.sections.sync import SyncSettings
from eventbus.events import (
    ArtifactRef,
    DataSyncComplete,
    DataSyncPlanned,
    Event,
    GpuInfo,
    HostOnline,
    HostResources,
    SelfplayComplete,
    WorkFailed,
)
from projections import cluster, data
from projections.base import fold_events
from projections.data import DataState, TransferStatus
from services.leader.synctargets import ephemeral_nodes, training_targets
from services.leader.transfers import Fleet, candidates, plan_transfers
from tests.terms import decided, in_term

T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
SETTINGS = SyncSettings(retry_after_s=60.0, retry_max_s=600.0, max_inflight_per_node=2, max_plans_per_tick=5)


def batch(batch_id: str, node: str, minutes: float = 0.0, size: int = 1000) -> SelfplayComplete:
    ref = ArtifactRef(path=f"/d/{batch_id}.npz", size_bytes=size, sha256="ab" * 32, node=node)
    return SelfplayComplete(batch_id=batch_id, work_id=f"w-{batch_id}", node=node, board_type="hex8", num_players=2,
                            num_games=10, data=ref, ts=T0 + dt.timedelta(minutes=minutes))


def folded(events: list[Event]) -> DataState:
    return fold_events(data.PROJECTION, list(enumerate(in_term(events), start=1)))


def apply_all(state: DataState, events: list[Event], now: dt.datetime) -> DataState:
    for event in events:
        state = data.apply(state, msgspec.structs.replace(decided(event), ts=now), state.last_seq + 1)
    return state


def fleet(targets: set[str], alive: set[str], ephemeral: set[str] = set()) -> Fleet:  # noqa: B006
    return Fleet(targets=frozenset(targets), alive=frozenset(alive), ephemeral=frozenset(ephemeral))


def test_a_batch_goes_to_every_training_node_that_lacks_it() -> None:
    state = folded([batch("b1", "n1")])
    plans = plan_transfers(state, fleet({"n1", "n2", "n3"}, {"n1", "n2", "n3"}), T0, SETTINGS)
    assert [(p.transfer_id, p.from_node, p.to_node, p.size_bytes) for p in plans] == [
        ("b1>n2#1", "n1", "n2", 1000), ("b1>n3#1", "n1", "n3", 1000)]


def test_a_batch_of_an_item_that_ended_failed_or_cancelled_is_not_copied() -> None:
    state = folded([batch("b1", "n1"), batch("b2", "n1"), WorkFailed(work_id="w-b2", reason="gave up")])
    plans = plan_transfers(state, fleet({"n1", "n2"}, {"n1", "n2"}), T0, SETTINGS)
    assert [p.batch_id for p in plans] == ["b1"]


def test_nothing_is_planned_twice_while_in_flight_or_done() -> None:
    state = folded([batch("b1", "n1")])
    plans = plan_transfers(state, fleet({"n2"}, {"n1", "n2"}), T0, SETTINGS)
    state = apply_all(state, list(plans), T0)
    assert plan_transfers(state, fleet({"n2"}, {"n1", "n2"}), T0, SETTINGS) == []
    state = apply_all(state, [DataSyncComplete(batch_id="b1", transfer_id="b1>n2#1", to_node="n2", ok=True)], T0)
    assert plan_transfers(state, fleet({"n2"}, {"n1", "n2"}), T0 + dt.timedelta(days=1), SETTINGS) == []


def test_a_failed_copy_is_planned_again_with_a_new_id_after_the_backoff() -> None:
    state = folded([batch("b1", "n1")])
    state = apply_all(state, plan_transfers(state, fleet({"n2"}, {"n1", "n2"}), T0, SETTINGS), T0)  # type: ignore[arg-type]
    state = apply_all(state, [DataSyncComplete(batch_id="b1", transfer_id="b1>n2#1", to_node="n2", ok=False, error="x")], T0)
    assert plan_transfers(state, fleet({"n2"}, {"n1", "n2"}), T0 + dt.timedelta(seconds=59), SETTINGS) == []
    [again] = plan_transfers(state, fleet({"n2"}, {"n1", "n2"}), T0 + dt.timedelta(seconds=60), SETTINGS)
    assert again.transfer_id == "b1>n2#2" and "attempt 2" in again.reason


def test_batches_only_ephemeral_nodes_hold_go_first_then_the_newest() -> None:
    state = folded([batch("old", "n1", 0), batch("new", "n1", 5), batch("rented", "vast1", 1)])
    plans = plan_transfers(state, fleet({"t"}, {"n1", "vast1", "t"}, {"vast1"}), T0, SETTINGS)
    assert [p.batch_id for p in plans] == ["rented", "new"]  # two in flight per target at most
    assert "ephemeral" in plans[0].reason


def test_an_offline_origin_is_replaced_by_another_holder_and_stale_batches_are_skipped() -> None:
    state = folded([batch("b1", "n1", 0), batch("stale", "n2", -60 * 49)])
    state = apply_all(state, [DataSyncPlanned(batch_id="b1", transfer_id="b1>n2#1", from_node="n1", to_node="n2"),
                              DataSyncComplete(batch_id="b1", transfer_id="b1>n2#1", to_node="n2", ok=True)], T0)
    [plan] = plan_transfers(state, fleet({"n3"}, {"n2", "n3"}), T0, SETTINGS)
    assert (plan.batch_id, plan.from_node) == ("b1", "n2")
    assert plan_transfers(state, fleet({"n3"}, {"n3"}), T0, SETTINGS) == []  # no alive holder: nothing to copy from


def test_training_targets_follow_roles_and_vram_and_laptop_mode_takes_every_node() -> None:
    hosts = HostsConfig(hosts={
        "big": HostEntry(role="nn_training", gpu="GH200 96GB"), "small": HostEntry(role="training", gpu="RTX 4060 8GB"),
        "sp": HostEntry(role="selfplay", gpu="H100 80GB"), "off": HostEntry(role="mixed", gpu="A100 40GB", status="disabled"),
        "probe": HostEntry(role="mixed"), "vast1": HostEntry(role="selfplay", ephemeral=True),
    })
    gpu = HostResources(gpus=[GpuInfo(name="RTX 5090", memory_gb=32.0)])
    state = fold_events(cluster.PROJECTION, list(enumerate(in_term(
        [HostOnline(node=n) for n in ("big", "small", "sp", "off", "gone", "laptop")] + [HostOnline(node="probe", resources=gpu)]),
        start=1)))
    state = msgspec.structs.replace(state, nodes={k: v for k, v in state.nodes.items() if k != "gone"})
    assert training_targets(state, hosts, SyncSettings()) == {"big", "probe", "laptop"}  # laptop: not listed
    assert training_targets(state, None, SyncSettings()) == set(state.nodes)
    assert ephemeral_nodes(hosts) == {"vast1"}


# ---- property: never the same batch to the same node twice ---------------------------

NODES = ["n1", "n2", "n3", "v1"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Event], list[tuple[str, int, bool]], set[str], set[str]]:
    batches = [batch(f"b{i}", draw(st.sampled_from(NODES)), draw(st.integers(-5, 5))) for i in range(draw(st.integers(1, 6)))]
    steps = draw(st.lists(st.tuples(st.sampled_from(["tick", "end"]), st.integers(0, 300), st.booleans()), max_size=40))
    targets = set(draw(st.sets(st.sampled_from(NODES), min_size=1)))
    alive = set(draw(st.sets(st.sampled_from(NODES), min_size=1))) | targets
    return batches, steps, targets, alive  # type: ignore[return-value]


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_the_planner_never_duplicates_a_transfer(scenario: tuple[list[Event], list[tuple[str, int, bool]], set[str], set[str]]) -> None:
    batches, steps, targets, alive = scenario
    state, now = folded(batches), T0
    current = fleet(targets, alive, {"v1"})
    for kind, number, ok in steps:
        if kind == "tick":
            now += dt.timedelta(seconds=number)
            allowed = candidates(state, current, now, SETTINGS)
            plans = plan_transfers(state, current, now, SETTINGS)
            check_plans(state, plans, allowed, current)
            state = apply_all(state, list(plans), now)
        else:
            open_ = sorted((t for t in state.transfers.values() if t.status is TransferStatus.PLANNED), key=lambda t: t.transfer_id)
            if open_:
                t = open_[number % len(open_)]
                state = apply_all(state, [DataSyncComplete(batch_id=t.batch_id, transfer_id=t.transfer_id, to_node=t.to_node, ok=ok)], now)
        check_history(state)
    assert state.anomaly_count == 0


def check_plans(state: DataState, plans: list[DataSyncPlanned], allowed: list[object], current: Fleet) -> None:
    pairs = [(p.batch_id, p.to_node) for p in plans]
    assert len(set(pairs)) == len(pairs) and len(plans) <= SETTINGS.max_plans_per_tick
    for plan in plans:
        b = state.batches[plan.batch_id]
        assert plan.transfer_id not in state.transfers and plan.to_node not in b.nodes
        assert plan.from_node in b.nodes and plan.from_node in current.alive and plan.to_node in current.targets
        assert not any(t.batch_id == plan.batch_id and t.to_node == plan.to_node and t.status is not TransferStatus.FAILED
                       for t in state.transfers.values())
    for target in current.targets:
        planned = [p for p in plans if p.to_node == target]
        inflight = sum(1 for t in state.transfers.values() if t.to_node == target and t.status is TransferStatus.PLANNED)
        assert inflight + len(planned) <= SETTINGS.max_inflight_per_node
        at_risk = {c.batch.batch_id for c in allowed if c.target == target and c.at_risk}  # type: ignore[attr-defined]
        if any(p.batch_id not in at_risk for p in planned):
            assert at_risk <= {p.batch_id for p in planned}, "a safe batch went before one only ephemeral nodes hold"


def check_history(state: DataState) -> None:
    by_pair: dict[tuple[str, str], list[TransferStatus]] = {}
    for t in sorted(state.transfers.values(), key=lambda t: t.planned_seq):
        by_pair.setdefault((t.batch_id, t.to_node), []).append(t.status)
    for statuses in by_pair.values():
        assert all(s is TransferStatus.FAILED for s in statuses[:-1]), f"a copy planned again while one was open or done: {statuses}"
