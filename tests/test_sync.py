"""Data sync end to end: the leader's planner loop here, one `sync` process per node, a real nats-server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config.settings import load_config
from eventbus.connection import Bus
from eventbus.events import ArtifactRef, HostOnline, SelfplayComplete
from eventbus.history import events
from eventbus.publisher import Publisher
from services.leader.syncplan import sync_planner_loop
from tests.bus_harness import provisioned_bus
from tests.leader_harness import leader_loop_running
from tests.procs.dist_fleet import Fleet, ServiceProcess, wait_for, write_node_config
from tests.randomfiles import random_artifact
from tests.terms import as_term

pytestmark = pytest.mark.timeout(90)

LEADER = "test-leader"
HOSTS = """
hosts:
  n1: {role: selfplay, gpu: "RTX 4060 8GB", ephemeral: true}
  n2: {role: nn_training, gpu: "GH200 96GB"}
  n3: {role: training, gpu: "A100 40GB"}
"""


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with provisioned_bus(nats_url, node_id=LEADER) as connected:  # as the leader the loops run under
        yield connected


def write_batch(path: Path, size: int) -> ArtifactRef:
    """A random batch file written at `path` by n1's selfplay."""
    return random_artifact(path, size, node="n1")


def received(tmp_path: Path, node: str, batch_id: str, sha256: str) -> bool:
    path = tmp_path / node / "data" / "sync" / "hex8_2p" / f"{batch_id}.npz"
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256


async def of_type(bus: Bus, type_name: str) -> list[object]:
    return [e async for _s, e in events(bus, subject=f"rr.evt.data.*.{type_name}.*")]


async def test_batches_reach_training_nodes_once_verified_and_failed_copies_are_replanned(
    bus: Bus, nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    publisher = Publisher(bus)
    for node in ("n1", "n2", "n3"):
        await as_term(publisher, HostOnline(node=node))
    first = write_batch(tmp_path / "n1" / "selfplay" / "b1.npz", 1_500_000)
    second_path = tmp_path / "n1" / "selfplay" / "b2.npz"  # reported before the file is there: the copy fails
    second = ArtifactRef(path=str(second_path), size_bytes=400_000, sha256="", node="n1")
    with Fleet() as fleet:
        configs = {n: write_node_config(tmp_path / f"{n}.yaml", tmp_path / n, hosts_file=hosts) for n in ("n1", "n2", "n3")}
        for node, config in configs.items():
            fleet.add(ServiceProcess("sync", nats_url, node, config, tmp_path))
        async with leader_loop_running(bus, sync_planner_loop, load_config(configs["n1"]), node=LEADER, nats_url=nats_url,
                                       config_path=str(configs["n1"])):
            for batch_id, ref in (("b1", first), ("b2", second)):
                await publisher.publish(SelfplayComplete(batch_id=batch_id, work_id=f"w-{batch_id}", node="n1",
                                                         board_type="hex8", num_players=2, num_games=8, data=ref))
            for node in ("n2", "n3"):
                await wait_for(fleet, lambda: received(tmp_path, node, "b1", first.sha256), 30, f"b1 on {node}")  # noqa: B023
            failed = await wait_for(fleet, lambda: failed_copies(bus, "source no longer has"), 30, "the source gives b2 up")
            # A target may give up first on a loaded machine (the test's transfer timeout is 5 s): both are honest reasons.
            reasons = ("source no longer has", "batch never reached the store")
            assert all(any(r in e.error for r in reasons) for e in failed), [e.error for e in failed]  # type: ignore[attr-defined]
            content = os.urandom(second.size_bytes)
            second_path.write_bytes(content)  # the file appears: the next plan of b2 succeeds
            sha2 = hashlib.sha256(content).hexdigest()
            for node in ("n2", "n3"):
                await wait_for(fleet, lambda: received(tmp_path, node, "b2", sha2), 30, f"b2 on {node}")  # noqa: B023
        assert fleet.stop() == [0, 0, 0]
        uploads = fleet.processes[0].log().count("uploaded b1 ")
    planned = await of_type(bus, "DATA_SYNC_PLANNED")
    pairs = Counter((e.batch_id, e.to_node) for e in planned)  # type: ignore[attr-defined]
    assert pairs[("b1", "n2")] == pairs[("b1", "n3")] == 1 and ("b1", "n1") not in pairs  # n1 does not train
    assert pairs[("b2", "n2")] >= 2 and all(e.epoch == 1 and e.from_node == "n1" for e in planned)  # type: ignore[attr-defined]
    completes = await of_type(bus, "DATA_SYNC_COMPLETE")
    ok = [e for e in completes if e.ok]  # type: ignore[attr-defined]
    assert sorted((e.batch_id, e.to_node) for e in ok) == [("b1", "n2"), ("b1", "n3"), ("b2", "n2"), ("b2", "n3")]  # type: ignore[attr-defined]
    assert uploads == 1  # one upload served both targets
    from cli.main import main as rr

    capsys.readouterr()
    assert await asyncio.to_thread(rr, ["data", "--json", "--nats", nats_url]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["configs"][0]["config"] == "hex8_2p" and view["configs"][0]["batches"] == 2
    assert {b["batch_id"]: b["nodes"] for b in view["batches"]} == {"b1": ["n1", "n2", "n3"], "b2": ["n1", "n2", "n3"]}
    assert await asyncio.to_thread(rr, ["data", "--nats", nats_url]) == 0
    text = capsys.readouterr().out
    assert "hex8_2p" in text and "n1,n2,n3" in text and "transfers:" in text


async def failed_copies(bus: Bus, reason: str = "") -> list[object]:
    """Every failed copy, once one whose error names `reason` is among them."""
    failed = [e for e in await of_type(bus, "DATA_SYNC_COMPLETE") if not e.ok]  # type: ignore[attr-defined]
    return failed if any(reason in e.error for e in failed) else []  # type: ignore[attr-defined]
