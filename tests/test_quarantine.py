"""`rr quarantine`: a node's outputs since a time are tainted with what derives from them, and every node rolls back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config.sections.distribution import DistributionSettings
from config.settings import RrConfig
from eventbus.connection import Bus
from eventbus.events import HostOnline, ModelPromoted, utcnow
from eventbus.publisher import Publisher
from services.leader.distribution import distribution_loop
from tests.bus_harness import provisioned_bus
from tests.leader_harness import leader_loop_running
from tests.procs.dist_fleet import Fleet, wait_for
from tests.terms import as_term
from tests.test_distribution import checkpoint, distributor, installed, log_of, train_and_promote
from tests.test_forensics import _rr

LEADER = "test-leader"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with provisioned_bus(nats_url, node_id=LEADER) as connected:
        yield connected


async def _promote(bus: Bus, model_id: str, sha256: str, size: int, generation: int) -> None:
    await as_term(Publisher(bus), ModelPromoted(model_id=model_id, board_type="hex8", num_players=2, sha256=sha256,
                                               size_bytes=size, generation=generation, epoch=1))


async def test_quarantining_the_node_that_trained_the_best_rolls_every_node_back(bus: Bus, nats_url: str, tmp_path: Path) -> None:
    good = checkpoint(tmp_path / "n1" / "train" / "m1.pth", 200_000)
    bad = checkpoint(tmp_path / "n2" / "train" / "m2.pth", 200_000)
    for node in ("n1", "n2"):
        await as_term(Publisher(bus), HostOnline(node=node))
    with Fleet() as fleet:
        for node in ("n1", "n2"):
            distributor(fleet, nats_url, tmp_path, node)
        config = RrConfig(distribution=DistributionSettings(complete_check_s=0.2))
        async with leader_loop_running(bus, distribution_loop, config, node=LEADER, nats_url=nats_url):
            await train_and_promote(bus, "m1", "n1", good)
            for node in ("n1", "n2"):
                await wait_for(fleet, installed(tmp_path / node, good.sha256), 30, f"m1 on {node}")
            since = utcnow()
            await train_and_promote(bus, "m2", "n2", bad, promote=False)
            await _promote(bus, "m2", bad.sha256, bad.size_bytes, 2)
            for node in ("n1", "n2"):
                await wait_for(fleet, installed(tmp_path / node, bad.sha256), 30, f"m2 on {node}")
            code, out, err = await _rr(nats_url, "quarantine", "node", "n2", "--since", since.isoformat(),
                                       "--reason", "ECC errors on n2", "--json")
            assert code == 0, err
            assert json.loads(out)["tainted_models"] == {"m2": f"ECC errors on n2 (quarantine {json.loads(out)['quarantines'][0]['quarantine_id']})"}
            for node in ("n1", "n2"):
                await wait_for(fleet, installed(tmp_path / node, good.sha256), 30, f"m1 back on {node}")
        assert fleet.stop() == [0, 0]
    rollbacks = [e for e in await log_of(bus, "MODEL_PROMOTED") if e.previous_model == "m2"]  # type: ignore[attr-defined]
    assert len(rollbacks) == 1 and rollbacks[0].model_id == "m1" and "ECC errors on n2" in rollbacks[0].reason  # type: ignore[attr-defined]
    code, out, _ = await _rr(nats_url, "models")
    assert code == 0 and "m1" in out and "tainted" not in out  # the best is clean again
    code, out, _ = await _rr(nats_url, "lineage", "m2")
    assert code == 0 and "TAINTED:   ECC errors on n2" in out


async def test_quarantine_list_lift_and_an_unknown_id(bus: Bus, nats_url: str, tmp_path: Path) -> None:
    ref = checkpoint(tmp_path / "m.pth", 1000)
    await train_and_promote(bus, "m1", "n1", ref, promote=False)
    code, out, err = await _rr(nats_url, "quarantine", "model", "m1", "--reason", "trained on a bad seed", "--json")
    assert code == 0, err
    quarantine_id = json.loads(out)["quarantines"][0]["quarantine_id"]
    code, out, _ = await _rr(nats_url, "quarantine", "list")
    assert code == 0 and "in force" in out and "m1: trained on a bad seed" in out
    code, out, _ = await _rr(nats_url, "quarantine", "lift", quarantine_id, "--reason", "false alarm")
    assert code == 0 and "LIFTED (false alarm)" in out and "tainted models (0)" in out
    code, _, err = await _rr(nats_url, "quarantine", "lift", "q-nope")
    assert code == 1 and "no quarantine q-nope" in err
    code, _, err = await _rr(nats_url, "quarantine", "node", "n1", "--reason", "x")
    assert code == 2 and "--since" in err
