"""Projections: pure folds that are deterministic, rebuild to the live state, survive snapshots, and fence stale leaders."""

from __future__ import annotations

import dataclasses
import datetime as dt
import tracemalloc
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus import events as ev
from eventbus.history import Record
from eventbus.publisher import Publisher
from eventbus.snapshots import load_snapshot
from projections import bundle, cluster, data, elo, models, work, workviews
from projections.base import Folder, fold_events, fold_records
from projections.bundle import fold_all, fold_all_events
from projections.fence import Fence, step
from projections.fencing import EpochFence
from projections.pmap import PMap
from projections.snapshot import decode_snapshot, encode_snapshot
from projections.work import WorkStatus
from servicekit.rebuild import state_at_seq, state_at_time, store
from tests.bus_harness import provisioned_bus
from tests.terms import TERM, decided, in_term

T0 = dt.datetime(2025, 3, 4, 5, 0, 0, tzinfo=dt.UTC)
NODES = ("gpu-1", "gpu-2", "gpu-3")
WORK = ("w-1", "w-2", "w-3")
ROLES = ("scheduler", "promoter")
MODELS = ("m-1", "m-2")
BATCHES = ("b-1", "b-2")
TRANSFERS = ("t-1", "t-2")

# ---- a small generator of plausible, often illegal, event sequences ------------------

epochs = st.one_of(st.none(), st.integers(min_value=1, max_value=6))
times = st.integers(min_value=0, max_value=600).map(lambda s: T0 + dt.timedelta(seconds=s))
node = st.sampled_from(NODES)
work_id = st.sampled_from(WORK)
attempt = st.integers(min_value=1, max_value=3)
model = st.sampled_from(MODELS)
env = {"ts": times, "epoch": epochs, "source": node}

EVENTS = st.one_of(
    st.builds(ev.LeaderElected, role=st.sampled_from(ROLES), node=node, **env),
    st.builds(ev.LeaderLost, role=st.sampled_from(ROLES), node=node, reason=st.just("lease expired"), **env),
    st.builds(ev.HostOnline, node=node, roles=st.just(["selfplay"]), version=st.just("0.1.0"), **env),
    st.builds(ev.HostOffline, node=node, reason=st.just("heartbeat_timeout"), silence_s=st.floats(0, 60), **env),
    st.builds(ev.WorkAdded, work_id=work_id, work_type=st.just("selfplay"), board_type=st.sampled_from(["hex8", "square8"]),
              num_players=st.sampled_from([2, 4]), **env),
    st.builds(ev.WorkAssigned, work_id=work_id, node=node, attempt=attempt, deadline=times, **env),
    st.builds(ev.WorkStarted, work_id=work_id, node=node, attempt=attempt, **env),
    st.builds(ev.WorkProgress, work_id=work_id, node=node, attempt=attempt, fraction=st.floats(0, 1), **env),
    st.builds(ev.WorkCompleted, work_id=work_id, node=node, attempt=attempt, **env),
    st.builds(ev.WorkAttemptFailed, work_id=work_id, node=node, attempt=attempt, reason=st.just("exit 1"), **env),
    st.builds(ev.WorkFailed, work_id=work_id, reason=st.just("3 attempts failed"), **env),
    st.builds(ev.WorkCancelled, work_id=work_id, **env),
    st.builds(ev.SelfplayComplete, batch_id=st.sampled_from(BATCHES), work_id=work_id, node=node, board_type=st.just("hex8"),
              num_players=st.just(2), num_games=st.integers(1, 500), **env),
    st.builds(ev.TrainingComplete, model_id=model, work_id=work_id, node=node, board_type=st.just("hex8"),
              num_players=st.just(2), input_batches=st.lists(st.sampled_from(BATCHES), max_size=2), **env),
    st.builds(ev.EvaluationComplete, model_id=model, work_id=work_id, node=node, opponent=st.just("random"), games=st.just(10),
              wins=st.integers(0, 10), losses=st.just(0), elo=st.one_of(st.none(), st.floats(800, 2000)), **env),
    st.builds(ev.ModelPromoted, model_id=model, board_type=st.just("hex8"), num_players=st.just(2),
              sha256=st.sampled_from(["aa", "bb"]), generation=st.integers(1, 5), **env),
    st.builds(ev.ModelDistributed, model_id=model, node=node, sha256=st.sampled_from(["aa", "bb"]), **env),
    st.builds(ev.ModelDistributionComplete, model_id=model, **env),
    st.builds(ev.DataSyncPlanned, batch_id=st.sampled_from(BATCHES), transfer_id=st.sampled_from(TRANSFERS), from_node=node,
              to_node=node, **env),
    st.builds(ev.DataSyncComplete, batch_id=st.sampled_from(BATCHES), transfer_id=st.sampled_from(TRANSFERS), to_node=node,
              ok=st.booleans(), **env),
    st.builds(ev.ConfigChanged, name=st.just("hosts"), **env),
)


@st.composite
def lifecycles(draw: st.DrawFn) -> list[ev.Event]:
    """Plausible work lives (a retry on another node included), cut short at random, interleaved with noise."""
    queues: list[list[ev.Event]] = []
    for w in WORK:
        first, second, epoch = draw(node), draw(node), draw(epochs)
        life: list[ev.Event] = [
            ev.WorkAdded(work_id=w, work_type="selfplay", board_type="hex8", num_players=2, ts=draw(times)),
            ev.WorkAssigned(work_id=w, node=first, attempt=1, deadline=T0, epoch=epoch, ts=draw(times)),
            ev.WorkStarted(work_id=w, node=first, attempt=1, ts=draw(times)),
            ev.WorkProgress(work_id=w, node=first, attempt=1, fraction=0.5, ts=draw(times)),
            ev.WorkAttemptFailed(work_id=w, node=first, attempt=1, reason="node lost", epoch=epoch, ts=draw(times)),
            ev.WorkAssigned(work_id=w, node=second, attempt=2, deadline=T0, epoch=epoch, ts=draw(times)),
            ev.WorkStarted(work_id=w, node=second, attempt=2, ts=draw(times)),
            ev.WorkCompleted(work_id=w, node=second, attempt=2, ts=draw(times)),
        ]
        queues.append(life[: draw(st.integers(0, len(life)))])
    queues.append(draw(st.lists(EVENTS, max_size=20)))
    out: list[ev.Event] = []
    while any(queues):
        queue = draw(st.sampled_from([q for q in queues if q]))
        out.append(queue.pop(0))
    return out


LOGS = st.one_of(st.lists(EVENTS, max_size=60), lifecycles())
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def numbered(events: Sequence[ev.Event], start: int = 1) -> list[tuple[int, ev.Event]]:
    return list(enumerate(events, start))


def records(events: Sequence[ev.Event], start: int = 1) -> list[Record]:
    return [Record(seq, e.subject(), ev.encode(e)) for seq, e in numbered(events, start)]


# ---- properties ----------------------------------------------------------------------


@PROPERTY
@given(LOGS)
def test_the_same_log_folds_to_the_same_state(log: list[ev.Event]) -> None:
    assert fold_all_events(numbered(log)) == fold_all_events(numbered(log))


@PROPERTY
@given(LOGS)
def test_rebuild_from_records_equals_incremental_folding(log: list[ev.Event]) -> None:
    rebuilt = fold_all(records(log))
    live = Folder(bundle.PROJECTION)
    for record in records(log):  # one at a time, as a live consumer would
        live(record)
    assert bundle.PROJECTION.finished(live.state) == rebuilt == fold_all_events(numbered(log))
    assert rebuilt.last_seq == len(log)


def _spoiled(log: list[ev.Event], data_: st.DataObject) -> list[Record]:
    """The log's records with some bodies broken and some on another event's subject."""
    out = records(log)
    for i in data_.draw(st.lists(st.integers(0, max(0, len(out) - 1)), max_size=4)) if out else ():
        seq, subject = out[i].seq, out[i].subject
        out[i] = Record(seq, subject, b"{broken") if i % 2 else Record(seq, out[(i + 1) % len(out)].subject, out[i].data)
    return out


@PROPERTY
@given(LOGS, st.data())
def test_the_set_held_open_while_folding_equals_building_it_per_event(log: list[ev.Event], data_: st.DataObject) -> None:
    # bundle.PROJECTION folds records with its parts held apart (`folding`); the same projection
    # without it builds the whole set per event through `apply`. Reads in between close the set.
    stored = _spoiled(log, data_)
    reads = set(data_.draw(st.lists(st.integers(0, len(stored)), max_size=5)))
    per_event = Folder(dataclasses.replace(bundle.PROJECTION, folding=None))
    held_open = Folder(bundle.PROJECTION)
    for i, record in enumerate(stored):
        per_event(record)
        held_open(record)
        if i in reads:
            assert held_open.state == per_event.state
    assert bundle.PROJECTION.finished(held_open.state) == bundle.PROJECTION.finished(per_event.state)
    assert held_open.state.last_seq == len(stored)


@PROPERTY
@given(LOGS)
def test_each_projection_alone_equals_its_part_of_the_set(log: list[ev.Event]) -> None:
    together = fold_all(records(log))
    for name, projection in bundle.PARTS.items():
        alone = fold_records(projection, records(log))
        assert alone == getattr(together, name), name
        assert alone.last_seq == len(log)


@PROPERTY
@given(LOGS, st.data())
def test_snapshot_plus_tail_equals_a_rebuild_from_scratch(log: list[ev.Event], data_: st.DataObject) -> None:
    cut = data_.draw(st.integers(min_value=0, max_value=len(log)))
    head = fold_all(records(log[:cut]))
    loaded = decode_snapshot(bundle.PROJECTION, encode_snapshot(bundle.PROJECTION, head))
    assert loaded is not None and loaded.state == head and loaded.header.last_seq == cut
    resumed = fold_all(records(log), loaded.state)  # records up to `cut` are skipped: already folded
    assert resumed == fold_all(records(log))


@PROPERTY
@given(LOGS)
def test_the_fold_fence_agrees_with_the_leaders_epoch_fence(log: list[ev.Event]) -> None:
    fence, reference = Fence(), EpochFence()
    for seq, event in numbered(log):
        fence, admitted = step(fence, event, seq)
        assert admitted == reference.admit(event), (seq, event)
    assert fence.view == reference.view()
    assert fence.dropped == reference.statistics().dropped


@PROPERTY
@given(st.dictionaries(st.text(max_size=3), st.integers(), max_size=200), st.lists(st.text(max_size=3), max_size=40))
def test_pmap_behaves_like_a_dict_and_never_changes_an_old_version(items: dict[str, int], removals: list[str]) -> None:
    built = PMap[str, int]()
    for key, value in items.items():
        before = built
        built = built.set(key, value)
        assert key not in before or before[key] == items[key]
    assert built.to_dict() == items and len(built) == len(items) and built == PMap(items)
    expected = dict(items)
    for key in removals:
        built = built.remove(key)
        expected.pop(key, None)
    assert built.to_dict() == expected and len(built) == len(expected)


def test_a_pmap_set_copies_a_few_small_nodes_whatever_the_size_of_the_map() -> None:
    # A fold sets one key per event; if a set copied a share of the map (as a fixed-depth tree
    # of dicts does, ~n/4096 entries a leaf), a long log would cost time linear in its items.
    big = PMap({f"w-{i:07d}": i for i in range(250_000)})
    tracemalloc.start()
    try:
        versions = [big.set(f"w-{i:07d}", -1) for i in range(0, 250_000, 500)]
        allocated, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_set = allocated / len(versions)
    assert per_set < 2000, f"{per_set:.0f} bytes allocated per set on a 250k map: the map is copying more than a path"
    assert big["w-0000000"] == 0 and versions[0]["w-0000000"] == -1 and len(versions[-1]) == len(big)


# ---- the work lifecycle --------------------------------------------------------------


def _work(*events: ev.Event) -> work.WorkState:
    elected = work.PROJECTION.apply(work.PROJECTION.initial(), TERM, 0)  # the term whose decisions these are, before seq 1
    return fold_events(work.PROJECTION, numbered([decided(e) for e in events]), elected)


ADDED = ev.WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, ts=T0)


def _assigned(attempt: int, node: str, epoch: int | None = None) -> ev.WorkAssigned:
    return ev.WorkAssigned(work_id="w-1", node=node, attempt=attempt, deadline=T0, epoch=epoch, ts=T0)


def test_a_work_item_moves_through_its_states_and_is_counted_per_node_and_config() -> None:
    state = _work(ADDED, _assigned(1, "gpu-1"), ev.WorkStarted(work_id="w-1", node="gpu-1", attempt=1))
    item = state.items["w-1"]
    assert (item.status, item.attempt, item.node) == (WorkStatus.RUNNING, 1, "gpu-1")
    assert workviews.counts(state)["running"] == 1 and workviews.by_node(state) == {"gpu-1": {"running": 1}}
    assert workviews.by_config(state) == {"hex8_2p": {"running": 1}}
    done = fold_events(work.PROJECTION, [(4, ev.WorkCompleted(work_id="w-1", node="gpu-1", attempt=1))], state)
    assert done.items["w-1"].status is WorkStatus.COMPLETED and done.anomaly_count == 0
    assert workviews.by_node(done) == {} and done.counts == {"completed": 1}


def test_completing_an_unknown_item_is_an_anomaly_not_a_new_item() -> None:
    state = _work(ev.WorkCompleted(work_id="w-9", node="gpu-1", attempt=1))
    assert "w-9" not in state.items and state.anomaly_count == 1
    assert state.anomalies[0].reason == "unknown work item w-9" and state.anomalies[0].seq == 1


def test_a_superseded_attempt_cannot_complete_the_item() -> None:
    late = ev.WorkCompleted(work_id="w-1", node="gpu-1", attempt=1)
    state = _work(ADDED, _assigned(1, "gpu-1"), _assigned(2, "gpu-2"), late)
    item = state.items["w-1"]
    assert (item.status, item.attempt, item.node) == (WorkStatus.ASSIGNED, 2, "gpu-2")
    assert [a.reason for a in state.anomalies] == [
        "from superseded attempt 1 on gpu-1 (current attempt is 2 on gpu-2)"
    ]


@pytest.mark.parametrize(
    "late",
    [
        ev.WorkStarted(work_id="w-1", node="gpu-1", attempt=1),
        ev.WorkProgress(work_id="w-1", node="gpu-1", attempt=1),
        ev.WorkCancelled(work_id="w-1"),
        ev.WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2),
    ],
)
def test_nothing_moves_a_completed_item(late: ev.Event) -> None:
    done = (ADDED, _assigned(1, "gpu-1"), ev.WorkCompleted(work_id="w-1", node="gpu-1", attempt=1))
    state = _work(*done, late)
    assert state.items["w-1"].status is WorkStatus.COMPLETED and state.anomaly_count == 1


def test_the_transition_table_is_the_only_source_of_legal_moves() -> None:
    assert work.TERMINAL == {WorkStatus.COMPLETED, WorkStatus.FAILED, WorkStatus.CANCELLED}
    assert set(work.TRANSITIONS) == set(WorkStatus)
    state = _work(ADDED, ev.WorkStarted(work_id="w-1", node="gpu-1", attempt=0))
    assert state.anomalies[-1].reason == "illegal transition: WORK_STARTED in state pending"


def test_a_stale_leaders_assignment_is_dropped_and_counted() -> None:
    state = _work(
        ev.LeaderElected(role="scheduler", node="gpu-1", epoch=7), ADDED, _assigned(1, "gpu-2", epoch=7),
        ev.LeaderElected(role="scheduler", node="gpu-3", epoch=9), _assigned(2, "gpu-1", epoch=7),
    )
    item = state.items["w-1"]
    assert (item.attempt, item.node, item.epoch) == (1, "gpu-2", 7)
    assert state.fence.dropped == 1 and state.anomaly_count == 0 and state.last_seq == 5
    assert state.fence.last_dropped[0].reason == "stale decision of epoch 7: scheduler leadership is at epoch 9"


# ---- cluster, models, data, elo ------------------------------------------------------


def test_cluster_leaders_nodes_and_alive_peers() -> None:
    log = [
        ev.LeaderElected(role="scheduler", node="gpu-1", epoch=3, ts=T0),
        *(ev.HostOnline(node=n, roles=["selfplay"], version="0.1.0", ts=T0, epoch=3) for n in NODES),
        ev.HostOffline(node="gpu-2", reason="heartbeat_timeout", silence_s=15.2, ts=T0, epoch=3),
        ev.LeaderLost(role="scheduler", node="gpu-1", reason="lease expired", ts=T0),
        ev.HostOffline(node="gpu-9", reason="heartbeat_timeout", ts=T0, epoch=3),
        ev.HostOnline(node="gpu-7", ts=T0),  # no epoch: no leader's decision
        ev.LeaderElected(role="scheduler", node="gpu-2", epoch=2, ts=T0),  # older than epoch 3: fenced out
    ]
    state = fold_events(cluster.PROJECTION, numbered(log))
    assert cluster.alive_peers(state) == 2 and state.nodes["gpu-2"].offline_count == 1
    leader = state.leaders["scheduler"]
    assert (leader.node, leader.epoch, leader.reason) == (None, 3, "gpu-1 lost it: lease expired")
    assert [a.about for a in state.anomalies] == ["gpu-9"] and state.fence.dropped == 2 and "gpu-7" not in state.nodes
    assert "without an epoch" in state.fence.last_dropped[0].reason


def test_models_promotion_distribution_and_a_corrupt_copy() -> None:
    log = [
        ev.TrainingComplete(model_id="m-1", work_id="w-2", node="gpu-1", board_type="hex8", num_players=2,
                            input_batches=["b-1"], checkpoint=ev.ArtifactRef(path="m-1.pt", size_bytes=10, sha256="aa")),
        ev.ModelPromoted(model_id="m-1", board_type="hex8", num_players=2, sha256="aa", generation=2),
        ev.ModelDistributed(model_id="m-1", node="gpu-2", sha256="aa"),
        ev.ModelDistributed(model_id="m-1", node="gpu-3", sha256="bad"),
        ev.ModelDistributionComplete(model_id="m-1", nodes=["gpu-2"]),
    ]
    state = fold_events(models.PROJECTION, numbered(in_term(log)))
    promoted = models.promoted_models(state)["hex8_2p"]
    assert (promoted.model_id, promoted.nodes, promoted.distribution_complete) == ("m-1", ("gpu-2",), True)
    assert promoted.promotion is not None and promoted.promotion.generation == 2
    assert state.anomaly_count == 1 and "gpu-3" in state.anomalies[0].reason


def test_data_freshness_and_transfers() -> None:
    log = [
        ev.SelfplayComplete(batch_id="b-1", work_id="w-1", node="gpu-1", board_type="hex8", num_players=2, num_games=100,
                            ts=T0),
        ev.SelfplayComplete(batch_id="b-2", work_id="w-2", node="gpu-2", board_type="hex8", num_players=2, num_games=50,
                            ts=T0 + dt.timedelta(minutes=5)),
        ev.DataSyncPlanned(batch_id="b-1", transfer_id="t-1", from_node="gpu-1", to_node="gpu-3"),
        ev.DataSyncComplete(batch_id="b-1", transfer_id="t-1", to_node="gpu-3", ok=True),
        ev.DataSyncComplete(batch_id="b-1", transfer_id="t-9", to_node="gpu-3"),
    ]
    state = fold_events(data.PROJECTION, numbered(in_term(log)))
    config = state.configs["hex8_2p"]
    assert (config.batches, config.games, config.newest_batch) == (2, 150, "b-2")
    assert data.freshness_s(config, T0 + dt.timedelta(minutes=6)) == 60.0
    assert state.batches["b-1"].nodes == ("gpu-1", "gpu-3") and state.transfer_counts == {"done": 1}
    assert [a.about for a in state.anomalies] == ["b-1"]


def test_data_and_models_count_only_the_current_attempts_results() -> None:
    def assigned(attempt: int, node: str) -> ev.WorkAssigned:
        return ev.WorkAssigned(work_id="w-1", node=node, attempt=attempt, deadline=T0, epoch=3)

    def batch(batch_id: str, node: str, attempt: int) -> ev.SelfplayComplete:
        return ev.SelfplayComplete(batch_id=batch_id, work_id="w-1", node=node, board_type="hex8", num_players=2,
                                   num_games=100, attempt=attempt, ts=T0)

    def trained(model_id: str, node: str, attempt: int) -> ev.TrainingComplete:
        return ev.TrainingComplete(model_id=model_id, work_id="w-1", node=node, board_type="hex8", num_players=2,
                                   attempt=attempt)

    log = [ev.LeaderElected(role="scheduler", node="s", epoch=3), assigned(1, "gpu-1"), assigned(2, "gpu-2"),
           batch("b-late", "gpu-1", 1), batch("b-now", "gpu-2", 2), trained("m-late", "gpu-1", 1), trained("m-now", "gpu-2", 2)]
    everything = fold_all_events(numbered(log))
    assert list(everything.data.batches.keys()) == ["b-now"] and everything.data.configs["hex8_2p"].games == 100
    assert "m-late" not in everything.models.models and "m-now" in everything.models.models
    rated = ev.EvaluationComplete(model_id="m-now", work_id="w-1", node="gpu-1", opponent="random", games=10, wins=9,
                                  losses=1, elo=1700.0, attempt=1)
    everything = fold_all_events(numbered([*log, rated]))
    assert elo.latest_elo(everything.elo, "m-now") is None and everything.elo.anomaly_count == 1
    late = [(a.type, a.reason) for part in (everything.data, everything.models) for a in part.anomalies]
    assert late == [
        ("SELFPLAY_COMPLETE", "late result of w-1 attempt 1 on gpu-1: attempt 2 on gpu-2 is current"),
        ("TRAINING_COMPLETE", "late result of w-1 attempt 1 on gpu-1: attempt 2 on gpu-2 is current"),
    ]


def test_elo_history_per_model_and_config() -> None:
    log = [
        ev.TrainingComplete(model_id="m-1", work_id="w-2", node="gpu-1", board_type="hex8", num_players=2),
        ev.EvaluationComplete(model_id="m-1", work_id="w-3", node="gpu-1", opponent="random", games=10, wins=9, losses=1,
                              elo=1200.0),
        ev.EvaluationComplete(model_id="m-1", work_id="w-4", node="gpu-1", opponent="m-0", games=10, wins=6, losses=4,
                              elo=1250.0),
    ]
    state = fold_events(elo.PROJECTION, numbered(log))
    assert [r.elo for r in state.history["m-1"]] == [1200.0, 1250.0]
    assert elo.by_config(state) == {}  # score differences against one opponent are not a rating
    rated = [
        ev.ModelRated(model_id="hex8_2p-search16", board_type="hex8", num_players=2, elo=610.0, interval=90.0,
                      kind="anchor", opponents=["random"]),
        ev.ModelRated(model_id="m-1", board_type="hex8", num_players=2, elo=720.0, interval=120.0,
                      opponents=["random", "hex8_2p-search16"]),
    ]
    state = fold_events(elo.PROJECTION, numbered(log + rated))
    assert elo.by_config(state) == {"hex8_2p": {"hex8_2p-search16": 610.0, "m-1": 720.0}}
    assert elo.latest_elo(state, "m-1") == 720.0 and state.ratings["m-1"].interval == 120.0
    assert {c: r.model_id for c, r in elo.anchors(state).items()} == {"hex8_2p": "hex8_2p-search16"}


def test_a_snapshot_of_another_version_is_ignored() -> None:
    state = fold_all(records([ADDED]))
    blob = encode_snapshot(bundle.PROJECTION, state)
    newer = dataclasses.replace(bundle.PROJECTION, version=bundle.PROJECTION.version + 1)
    assert decode_snapshot(newer, blob) is None
    assert decode_snapshot(cluster.PROJECTION, blob) is None
    assert decode_snapshot(bundle.PROJECTION, b"not a snapshot") is None


def test_an_undecodable_message_is_an_anomaly_and_still_advances_the_position() -> None:
    log = records([ADDED]) + [Record(2, "rr.evt.work.w-1.WORK_STARTED.gpu-1", b"{broken")]
    state = fold_all(log)
    assert state.last_seq == 2 and state.work.last_seq == 2 and state.anomaly_count == 1


# ---- against a real server -----------------------------------------------------------


def _sample_log(count: int, prefix: str = "w") -> list[ev.Event]:
    out: list[ev.Event] = [ev.LeaderElected(role="scheduler", node="gpu-1", epoch=1)]
    for i in range(count):
        w = f"{prefix}-{i}"
        out += [
            ev.HostOnline(node=NODES[i % 3]),
            ev.WorkAdded(work_id=w, work_type="selfplay", board_type="hex8", num_players=2),
            ev.WorkAssigned(work_id=w, node=NODES[i % 3], attempt=1, deadline=T0, epoch=1),
            ev.WorkCompleted(work_id=w, node=NODES[i % 3], attempt=1),
        ]
    return out


async def test_replay_at_a_past_sequence_equals_folding_that_prefix(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        published = await Publisher(bus).publish_many(_sample_log(25))
        stored = [(p.seq, p.event) for p in published]
        for seq in (1, 37, 64, len(stored)):
            rebuilt = await state_at_seq(bus, seq=seq, use_snapshot=False)
            assert rebuilt.state == fold_all_events(stored[:seq]) and rebuilt.folded == seq
        at = stored[40][1].ts
        assert at is not None
        by_time = await state_at_time(bus, at)
        assert by_time.state.last_seq >= 41 and by_time.state == fold_all_events([p for p in stored if p[1].ts <= at])


async def test_a_stored_snapshot_is_loaded_and_only_the_tail_is_folded(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        pub = Publisher(bus)
        await pub.publish_many(_sample_log(10))
        header = await store(bus, bundle.PROJECTION, (await state_at_seq(bus, use_snapshot=False)).state)
        assert header.last_seq == 41 and header.version == bundle.PROJECTION.version
        await pub.publish_many(_sample_log(3, prefix="later")[1:])
        live = await state_at_seq(bus)
        scratch = await state_at_seq(bus, use_snapshot=False)
        assert (live.snapshot_seq, live.folded) == (41, 12) and live.state == scratch.state
        assert live.state.work.counts == {"completed": 13} and live.state.last_seq == 53
        # After a version bump the kept snapshots are of another version: ignored with a reason, the log folded whole.
        other = dataclasses.replace(bundle.PROJECTION, version=bundle.PROJECTION.version + 1)
        ignored = await state_at_seq(bus, other)
        assert ignored.snapshot_seq == 0 and "version" in ignored.snapshot_ignored
        assert ignored.state == scratch.state and ignored.folded == 53
        # A snapshot past the requested sequence is not used: the prefix is folded from scratch.
        await store(bus, bundle.PROJECTION, scratch.state)
        early = await state_at_seq(bus, seq=5)
        assert early.snapshot_seq == 0 and early.state == (await state_at_seq(bus, seq=5, use_snapshot=False)).state
        assert await load_snapshot(bus, "no-such-projection") is None


def test_a_cancelled_attempt_reporting_its_end_is_recorded_without_anomaly() -> None:
    from eventbus.events import WorkAdded, WorkAssigned, WorkAttemptFailed, WorkCancelled, WorkStarted, utcnow
    from projections import work

    events = [
        WorkAdded(work_id="w", work_type="selfplay", board_type="hex8", num_players=2),
        WorkAssigned(work_id="w", node="n1", attempt=1, deadline=utcnow(), epoch=1),
        WorkStarted(work_id="w", node="n1", attempt=1),
        WorkCancelled(work_id="w", reason="operator"),
        WorkAttemptFailed(work_id="w", node="n1", attempt=1, reason="cancelled"),
    ]
    state = work.WorkState()
    for seq, event in enumerate(in_term(events), 1):
        state = work.apply(state, event, seq)
    item = state.items["w"]
    assert item.status is work.WorkStatus.CANCELLED and item.reason == "operator"
    assert state.anomaly_count == 0
