"""`rr whatif`: replaying a recorded window through the pure scheduling core, against the record."""

from __future__ import annotations

import datetime as dt
import random

import msgspec

from cli.whatif.recording import Arrival, NodeSpan, Recording, record
from cli.whatif.report import agreement, measure, side_by_side
from cli.whatif.simulate import Outcome, plan_from_best, recorded, simulate
from config.sections.scheduler import SchedulerSettings
from eventbus import events as ev
from services.leader.policy import NodeView, WorkView, plan_assignments, rank

T0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
CPU = ev.HostResources(cpu_count=8, memory_gb=32.0, gpus=[ev.GpuInfo(name="H100", memory_gb=80.0)])
# The tolerance README.md states for replaying the recorded config (the assigner reacts ~0.5 s late).
SAME_NODE_AT_LEAST = 0.9
P50_WITHIN_S = 2.0


def _window(seed: int, items: int = 120, gap_s: float = 20.0) -> Recording:
    """Three nodes, one of them leaving midway, and a burst of two configs' work with random durations."""
    rng = random.Random(seed)
    nodes = [NodeSpan(node="n1", start=0.0, end=None, vram_gb=80.0), NodeSpan(node="n2", start=0.0, end=None, vram_gb=80.0),
             NodeSpan(node="n3", start=0.0, end=1800.0, vram_gb=24.0)]
    arrivals = [Arrival(work_id=f"w{i}", work_type=rng.choice(["selfplay", "selfplay", "training"]),
                        board_type=rng.choice(["hex8", "square8"]), num_players=2, at=i * gap_s, order=i + 1)
                for i in range(items)]
    durations = {a.work_id: rng.uniform(20, 90) for a in arrivals}
    return Recording(start=T0, seconds=3600.0, nodes=nodes, arrivals=arrivals, durations=durations, assigned={}, completed={})


def _as_log(window: Recording, outcome: Outcome, jitter_s: float, seed: int) -> list[tuple[int, ev.Event]]:
    """The events a real fleet would have written for `outcome`, each assignment up to `jitter_s` late."""
    rng = random.Random(seed)
    at = lambda s: T0 + dt.timedelta(seconds=s)  # noqa: E731
    timed: list[tuple[float, ev.Event]] = []
    for n in window.nodes:
        timed.append((n.start, ev.HostOnline(node=n.node, resources=CPU if n.vram_gb == 80 else
                      ev.HostResources(cpu_count=8, memory_gb=32.0, gpus=[ev.GpuInfo(name="L4", memory_gb=24.0)]))))
        if n.end is not None:
            timed.append((n.end, ev.HostOffline(node=n.node, reason="heartbeat_timeout")))
    for a in window.arrivals:
        timed.append((a.at, ev.WorkAdded(work_id=a.work_id, work_type=a.work_type, board_type=a.board_type, num_players=2)))
        if a.work_id in outcome.assigned:
            node, when = outcome.assigned[a.work_id]
            late = rng.uniform(0, jitter_s)
            timed.append((when + late, ev.WorkAssigned(work_id=a.work_id, node=node, attempt=1, deadline=at(when + 3600))))
            timed.append((when + late, ev.WorkStarted(work_id=a.work_id, node=node, attempt=1)))
        if a.work_id in outcome.completed:
            timed.append((outcome.completed[a.work_id], ev.WorkCompleted(work_id=a.work_id, node=outcome.assigned[a.work_id][0],
                                                                        attempt=1, duration_s=outcome.ran[a.work_id])))
    timed.sort(key=lambda pair: pair[0])
    # Stamped here (id, source, time), as the fleet stamped them then: a publisher keeps a stamped event's time.
    return [(seq, msgspec.structs.replace(e, id=f"fleet:{seq}", source="fleet", ts=at(s))) for seq, (s, e) in enumerate(timed, 1)]


def test_a_node_that_left_and_came_back_before_the_window_runs_work_in_it() -> None:
    stamped = lambda seq, s, e: (seq, msgspec.structs.replace(e, id=f"fleet:{seq}", source="fleet", ts=T0 + dt.timedelta(seconds=s)))  # noqa: E731
    log = [stamped(1, -300, ev.HostOnline(node="n1", resources=CPU)),
           stamped(2, -200, ev.HostOffline(node="n1", reason="heartbeat_timeout")),
           stamped(3, -100, ev.HostOnline(node="n1", resources=CPU)),
           stamped(4, 10, ev.WorkAdded(work_id="w1", work_type="selfplay", board_type="hex8", num_players=2))]
    rec = record(log, T0, T0 + dt.timedelta(hours=1))
    assert rec.nodes == [NodeSpan(node="n1", start=0.0, end=None, vram_gb=80.0)]  # its time online before: no span
    assert simulate(rec, SchedulerSettings()).assigned == {"w1": ("n1", 10.0)}


def test_a_node_whose_next_span_begins_the_instant_its_last_ends_stays_up() -> None:
    # Offline and back within one clock tick (a log stamped in chunks): the node is not lost for the rest of the window.
    nodes = [NodeSpan(node="n1", start=0.0, end=100.0), NodeSpan(node="n1", start=100.0, end=None, vram_gb=80.0)]
    arrivals = [Arrival(work_id="w1", work_type="selfplay", board_type="hex8", num_players=2, at=150.0, order=1)]
    window = Recording(start=T0, seconds=3600.0, nodes=nodes, arrivals=arrivals, durations={"w1": 30.0}, assigned={},
                       completed={})
    assert simulate(window, SchedulerSettings()).assigned == {"w1": ("n1", 150.0)}


def test_a_plan_from_the_best_ranked_few_is_the_plan_of_every_pending_item() -> None:
    for seed in range(200):
        rng = random.Random(seed)
        nodes = [NodeView(node=f"n{i}", alive=True, vram_gb=rng.choice([0.0, 80.0]), max_parallel_jobs=rng.randint(1, 3),
                          running=rng.randint(0, 3), configured=False) for i in range(rng.randint(1, 6))]
        # Many of the best-ranked items target a node that is absent (or full): the best few then fill no slot,
        # and more are asked for.
        absent = rng.random()
        items = [WorkView(work_id=f"w{i}", work_type=rng.choice(["selfplay", "training"]), board_type=rng.choice(["hex8", "sq8"]),
                          num_players=2, order=i + 1, **({"priority": 5, "target_node": "n9"} if rng.random() < absent else
                                                         {"priority": rng.choice([None, 3]), "target_node": rng.choice([None, None, "n0"])}))
                 for i in range(rng.randint(0, 300))]
        settings = SchedulerSettings(curriculum={"hex8_2p": rng.choice([0.0, 1.0, 2.0]), "sq8_2p": 1.0})
        ranked = rank(items, {}, settings)
        assert plan_from_best(ranked, nodes, settings) == plan_assignments(items, nodes, {}, settings), seed


def test_a_replay_is_deterministic_for_a_seed() -> None:
    window = _window(1)
    assert simulate(window, SchedulerSettings(), seed=7) == simulate(window, SchedulerSettings(), seed=7)


def test_replaying_the_recorded_config_reproduces_the_record_within_the_stated_tolerance() -> None:
    settings = SchedulerSettings()
    for seed in range(3):
        window = _window(seed)
        truth = simulate(window, settings, seed=seed)  # what "the fleet" did
        rec = record(_as_log(window, truth, jitter_s=0.5, seed=seed), T0, T0 + dt.timedelta(hours=1))
        assert len(rec.arrivals) == len(window.arrivals) and [n.node for n in rec.nodes] == ["n1", "n2", "n3"]
        replay = simulate(rec, settings, seed=seed)
        recorded_m, replay_m = measure("recorded", rec, recorded(rec)), measure("replay", rec, replay)
        agree = agreement(recorded(rec), replay, recorded_m, replay_m)
        assert agree.same_first_node >= SAME_NODE_AT_LEAST, (seed, agree)
        assert all(delta <= P50_WITHIN_S for delta in agree.wait_p50_delta_s.values()), (seed, agree)


def test_a_config_weighted_zero_waits_longer_and_the_report_shows_it() -> None:
    window = _window(5, items=150, gap_s=12.0)  # more work than the nodes can take: a queue builds
    base = measure("recorded config", window, simulate(window, SchedulerSettings(), seed=1))
    starved = SchedulerSettings(curriculum={"hex8_2p": 0.0, "square8_2p": 1.0})
    alt = measure("hex8 weight 0", window, simulate(window, starved, seed=1))
    assert alt.wait_p50_by_config_s["hex8_2p"] > 2 * base.wait_p50_by_config_s["hex8_2p"] + 1
    assert alt.wait_p50_by_config_s["square8_2p"] <= base.wait_p50_by_config_s["square8_2p"]
    table = side_by_side([base, alt])
    assert "hex8 weight 0" in table and "wait p50 hex8_2p" in table and "utilisation" in table


async def test_rr_whatif_reads_the_window_from_the_log_and_reports_both_side_by_side(nats_url: str, tmp_path) -> None:
    import json

    from eventbus.publisher import Publisher
    from tests.bus_harness import provisioned_bus
    from tests.test_forensics import _rr

    window = _window(5, items=150, gap_s=12.0)
    log = _as_log(window, simulate(window, SchedulerSettings(), seed=1), jitter_s=0.5, seed=1)
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many([e for _, e in log])
    alt = tmp_path / "hex8-off.yaml"
    alt.write_text("scheduler:\n  curriculum: {hex8_2p: 0.0, square8_2p: 1.0}\n")
    until = (T0 + dt.timedelta(hours=1)).isoformat()
    code, out, err = await _rr(nats_url, "whatif", "--since", T0.isoformat(), "--until", until, "--alt", str(alt), "--json")
    assert code == 0, err
    report = json.loads(out)
    recorded_run, replay_run, alt_run = report["runs"]
    assert [r["label"] for r in report["runs"]] == ["recorded", "recorded config (replay)", "hex8-off.yaml"]
    assert report["membership"] == "subject index"
    assert report["agreement"]["same_first_node"] >= SAME_NODE_AT_LEAST
    assert abs(replay_run["wait_p50_by_config_s"]["hex8_2p"] - recorded_run["wait_p50_by_config_s"]["hex8_2p"]) <= P50_WITHIN_S
    assert alt_run["wait_p50_by_config_s"]["hex8_2p"] > 2 * replay_run["wait_p50_by_config_s"]["hex8_2p"]
    code, text, _ = await _rr(nats_url, "whatif", "--since", T0.isoformat(), "--until", until, "--alt", str(alt))
    assert code == 0 and "wait p50 hex8_2p" in text and "same first node" in text
    alt.write_text("scheduler:\n  no_such_key: 1\n")
    code, _, err = await _rr(nats_url, "whatif", "--since", T0.isoformat(), "--alt", str(alt))
    assert code == 2 and "no_such_key" in err
