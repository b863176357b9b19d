"""Incident forensics on a real server: a recorded incident explained by `rr timeline`, `rr status`, `rr replay`, `rr lineage`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from pathlib import Path

import msgspec

from cli.commands.replay import point_in_time
from eventbus import events as ev
from eventbus.publisher import Published, Publisher
from tests.bus_harness import provisioned_bus

PROJECT_ROOT = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2025, 3, 4, 5, 0, 0, tzinfo=dt.UTC)
CPU = ev.HostResources(cpu_count=16, memory_gb=128.0, gpus=[ev.GpuInfo(name="H100", memory_gb=80.0)])


def _incident() -> list[ev.Event]:
    """A leader change in the middle of a retried work item, with a stale decision and a zombie worker."""
    facts: list[tuple[str, ev.Event]] = [
        ("gpu-0", ev.LeaderElected(role="scheduler", node="gpu-0", ttl_s=3.0, epoch=7)),
        *(("gpu-0", ev.HostOnline(node=n, roles=["selfplay"], version="0.1.0", resources=CPU, epoch=7))
          for n in ("gpu-1", "gpu-2", "gpu-3")),
        ("gpu-0", ev.WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, num_games=500,
                               requested_by="operator")),
        ("gpu-0", ev.WorkAssigned(work_id="w-1", node="gpu-2", attempt=1, deadline=T0 + dt.timedelta(hours=1), epoch=7)),
        ("gpu-2", ev.WorkStarted(work_id="w-1", node="gpu-2", attempt=1, pid=4242)),
        ("gpu-0", ev.HostOffline(node="gpu-2", reason="heartbeat_timeout", silence_s=15.2, last_seen=T0, epoch=7)),
        ("gpu-0", ev.WorkAttemptFailed(work_id="w-1", node="gpu-2", attempt=1, reason="node gpu-2 offline", epoch=7)),
        ("gpu-0", ev.WorkAssigned(work_id="w-1", node="gpu-3", attempt=2, deadline=T0 + dt.timedelta(hours=1), epoch=7)),
        ("gpu-3", ev.WorkStarted(work_id="w-1", node="gpu-3", attempt=2, pid=77)),
        ("gpu-3", ev.WorkCompleted(work_id="w-1", node="gpu-3", attempt=2, duration_s=12.5)),  # seq 12
        ("gpu-0", ev.LeaderLost(role="scheduler", node="gpu-0", reason="lease expired")),
        ("gpu-1", ev.LeaderElected(role="scheduler", node="gpu-1", ttl_s=3.0, previous_node="gpu-0", epoch=9)),
        ("gpu-0", ev.WorkAssigned(work_id="w-1", node="gpu-2", attempt=3, deadline=T0 + dt.timedelta(hours=1), epoch=7)),
        ("gpu-2", ev.WorkCompleted(work_id="w-1", node="gpu-2", attempt=1, duration_s=40.0)),  # the zombie, back
        # What w-1 fed: a model, its evaluation, promotion and copies.
        ("gpu-3", ev.SelfplayComplete(batch_id="b-1", work_id="w-1", node="gpu-3", board_type="hex8", num_players=2,
                                      num_games=500, num_samples=16000, attempt=2)),
        ("gpu-1", ev.SelfplayComplete(batch_id="b-2", work_id="w-0", node="gpu-1", board_type="hex8", num_players=2,
                                      num_games=300, model_id="m-0")),
        ("gpu-1", ev.TrainingComplete(model_id="m-1", work_id="w-5", node="gpu-1", board_type="hex8", num_players=2,
                                      input_batches=["b-1", "b-2"], parent_model="m-0", metrics={"loss": 0.41},
                                      checkpoint=ev.ArtifactRef(path="m-1.pt", size_bytes=1000, sha256="ab" * 32))),
        ("gpu-3", ev.EvaluationComplete(model_id="m-1", work_id="w-6", node="gpu-3", opponent="m-0", games=50, wins=34,
                                        losses=12, draws=4, win_rate=0.68, elo=1612.0)),
        ("gpu-1", ev.ModelPromoted(model_id="m-1", board_type="hex8", num_players=2, sha256="ab" * 32, generation=5,
                                   reason="win rate 0.68 >= 0.55", evaluation_work_id="w-6", previous_model="m-0", epoch=9)),
        ("gpu-1", ev.ModelDistributed(model_id="m-1", node="gpu-1", sha256="ab" * 32, seconds=0.1)),
        ("gpu-3", ev.ModelDistributed(model_id="m-1", node="gpu-3", sha256="ab" * 32, seconds=2.1)),
        ("gpu-1", ev.ModelDistributionComplete(model_id="m-1", nodes=["gpu-1", "gpu-3"], seconds=2.3, epoch=9)),
    ]
    # Stamped here, one second apart, so that the test can ask for the cluster "as it was at" a time.
    return [
        msgspec.structs.replace(e, id=f"{src}:incident-{i}", source=src, ts=T0 + dt.timedelta(seconds=i))
        for i, (src, e) in enumerate(facts, 1)
    ]


async def _publish_incident(url: str) -> list[Published]:
    async with provisioned_bus(url, node_id="recorder") as bus:
        return await Publisher(bus).publish_many(_incident())


async def _rr(url: str, *argv: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RR_")} | {"PYTHONPATH": str(PROJECT_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *argv, "--nats", url, "--node-id", "gpu-1",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env, cwd=PROJECT_ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _explained(out: str) -> list[tuple[int, str, str]]:
    return [(line["seq"], line["text"], line["note"]) for line in map(json.loads, out.splitlines())]


async def test_the_work_items_timeline_explains_the_incident_in_order(nats_url: str) -> None:
    await _publish_incident(nats_url)
    code, out, err = await _rr(nats_url, "timeline", "--work", "w-1", "--json")
    assert code == 0, err
    assert _explained(out) == [
        (5, "work w-1 added by operator: selfplay hex8_2p, 500 games", ""),
        (6, "work w-1 attempt 1 assigned to gpu-2 (epoch 7)", ""),
        (7, "work w-1 attempt 1 started on gpu-2 (pid 4242)", ""),
        (8, "host gpu-2 offline: no heartbeat for 15.2s (epoch 7)", ""),
        (9, "work w-1 attempt 1 failed on gpu-2: node gpu-2 offline (epoch 7)", ""),
        (10, "work w-1 attempt 2 assigned to gpu-3 (epoch 7)", ""),
        (11, "work w-1 attempt 2 started on gpu-3 (pid 77)", ""),
        (12, "work w-1 attempt 2 completed on gpu-3 in 12.5s (exit 0)", ""),
        (15, "work w-1 attempt 3 assigned to gpu-2 (epoch 7)",
         "IGNORED: stale decision of epoch 7 by gpu-0: scheduler leadership is at epoch 9"),
        (16, "work w-1 attempt 1 completed on gpu-2 in 40.0s (exit 0)",
         "REJECTED: from superseded attempt 1 on gpu-2 (current attempt is 2 on gpu-3)"),
        (17, "batch b-1: 500 hex8_2p games (16000 samples) on gpu-3 by work w-1, random play", ""),
    ]
    code, text, _ = await _rr(nats_url, "timeline", "--work", "w-1")
    lines = text.splitlines()
    assert code == 0 and len(lines) == 11
    assert lines[0].split()[:4] == ["5", "2025-03-04", "05:00:05.000", "WORK_ADDED"]
    assert lines[8].endswith("-- IGNORED: stale decision of epoch 7 by gpu-0: scheduler leadership is at epoch 9")


async def test_a_nodes_timeline_and_the_leader_change_around_it(nats_url: str) -> None:
    await _publish_incident(nats_url)
    code, out, err = await _rr(nats_url, "timeline", "--node", "gpu-2", "--json")
    assert code == 0, err
    assert [(seq, note.split(":")[0]) for seq, _, note in _explained(out)] == [
        (3, ""), (6, ""), (7, ""), (8, ""), (9, ""), (15, "IGNORED"), (16, "REJECTED"),
    ]
    code, out, _ = await _rr(nats_url, "timeline", "--node", "gpu-0", "--json")
    texts = [text for _, text, _ in _explained(out)]
    assert "gpu-0 elected leader of scheduler (epoch 7)" in texts
    assert "gpu-0 lost leadership of scheduler: lease expired" in texts
    assert "gpu-1 elected leader of scheduler, after gpu-0 (epoch 9)" in texts
    code, _, err = await _rr(nats_url, "timeline", "--work", "no-such-item")
    assert code == 1 and "no events match work no-such-item" in err


async def test_status_json_has_the_seeds_keys_and_the_incidents_outcome(nats_url: str) -> None:
    await _publish_incident(nats_url)
    code, out, err = await _rr(nats_url, "status", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert {"leader_id", "alive_peers", "nodes", "role", "leaders", "work", "models", "data"} <= set(status)
    assert (status["leader_id"], status["alive_peers"], status["role"]) == ("gpu-1", 2, "leader")
    assert [(n["node_id"], n["status"]) for n in status["nodes"]] == [("gpu-1", "online"), ("gpu-2", "offline"), ("gpu-3", "online")]
    assert status["leaders"]["scheduler"]["node"] == "gpu-1" and status["leaders"]["scheduler"]["epoch"] == 9
    assert status["work"]["counts"]["completed"] == 1 and status["work"]["by_config"] == {"hex8_2p": {"completed": 1}}
    assert status["models"]["hex8_2p"]["model_id"] == "m-1" and status["models"]["hex8_2p"]["nodes"] == ["gpu-1", "gpu-3"]
    assert (status["anomalies"], status["fenced_decisions"], status["last_seq"]) == (1, 1, 24)
    code, text, _ = await _rr(nats_url, "status")
    assert code == 0 and "leader:  gpu-1" in text and "gpu-2" in text and "offline" in text


async def test_replay_shows_the_cluster_as_it_was(nats_url: str) -> None:
    await _publish_incident(nats_url)
    code, out, err = await _rr(nats_url, "replay", "--seq", "7", "--json")
    assert code == 0, err
    then = json.loads(out)
    assert (then["leader_id"], then["alive_peers"], then["last_seq"]) == ("gpu-0", 3, 7)
    assert then["work"]["by_node"] == {"gpu-2": {"running": 1}}
    code, out, _ = await _rr(nats_url, "replay", "--at", "2025-03-04T05:00:13.5Z", "--json")
    between = json.loads(out)
    assert (between["leader_id"], between["last_seq"], between["leaders"]["scheduler"]["node"]) == (None, 13, None)
    assert between["leaders"]["scheduler"]["reason"] == "gpu-0 lost it: lease expired"


async def test_lineage_of_a_model(nats_url: str) -> None:
    await _publish_incident(nats_url)
    code, out, err = await _rr(nats_url, "lineage", "m-1", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["config"] == "hex8_2p" and found["parent_model"] == "m-0"
    assert found["training"]["work_id"] == "w-5" and found["training"]["node"] == "gpu-1"
    assert [(b["batch_id"], b["batch"]["work_id"]) for b in found["batches"]] == [("b-1", "w-1"), ("b-2", "w-0")]
    assert found["games"] == 800
    assert [r["work_id"] for r in found["promoting_evaluation"]] == ["w-6"]
    assert found["promotion"]["generation"] == 5 and found["promotion"]["epoch"] == 9
    assert found["nodes"] == ["gpu-1", "gpu-3"] and found["distribution_complete"] and found["promoted_now"]
    code, text, _ = await _rr(nats_url, "lineage", "m-1")
    assert code == 0 and "trained:   by work w-5 on gpu-1" in text and "<- cited by the promotion" in text
    code, _, err = await _rr(nats_url, "lineage", "m-404")
    assert code == 1 and "m-404" in err


def test_replay_times_are_iso_or_an_age() -> None:
    now = T0
    assert point_in_time("2025-03-04T05:06:07Z") == dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    assert point_in_time("2025-03-04 05:06") == dt.datetime(2025, 3, 4, 5, 6, tzinfo=dt.UTC)
    assert point_in_time("15m", now) == point_in_time("-15m", now) == now - dt.timedelta(minutes=15)
    assert point_in_time("2h ago", now) == now - dt.timedelta(hours=2)
