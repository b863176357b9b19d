"""Model distribution end to end: distributor processes per node, a real nats-server, the leader's completion loop."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from config.sections.distribution import DistributionSettings
from config.settings import RrConfig
from eventbus.connection import Bus
from eventbus.events import ArtifactRef, HostOnline, ModelPromoted, TrainingComplete
from eventbus.history import events
from eventbus.objects import stat_object
from eventbus.publisher import Publisher
from services.leader.distribution import distribution_loop
from tests.bus_harness import provisioned_bus
from tests.helpers import eventually
from tests.leader_harness import leader_loop_running
from tests.procs.dist_fleet import Fleet, ServiceProcess, wait_for, write_node_config
from tests.randomfiles import random_artifact
from tests.terms import as_term

pytestmark = pytest.mark.timeout(90)

LEADER = "test-leader"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with provisioned_bus(nats_url, node_id=LEADER) as connected:  # as the leader the loops run under
        yield connected


def checkpoint(path: Path, size: int) -> ArtifactRef:
    """A random model file written at `path`."""
    return random_artifact(path, size)


async def train_and_promote(bus: Bus, model_id: str, node: str, ref: ArtifactRef, *, promote: bool = True) -> None:
    """TRAINING_COMPLETE from `node`, then, once the trainer's distributor has uploaded it, the leader's MODEL_PROMOTED.

    The real leader promotes only after an evaluation, which takes far longer than the upload; promoting
    before the upload makes the other nodes report a (retried) missing object, which is not what these
    tests are about.
    """
    publisher = Publisher(bus)
    await publisher.publish(TrainingComplete(model_id=model_id, work_id=f"w-{model_id}", node=node, board_type="hex8",
                                             num_players=2, checkpoint=ref))
    if promote:
        await eventually(lambda: stat_object(bus, "rr_models", model_id), timeout=30, message=f"{model_id} uploaded by {node}")
        await as_term(publisher, ModelPromoted(model_id=model_id, board_type="hex8", num_players=2, sha256=ref.sha256,
                                              size_bytes=ref.size_bytes, generation=1, epoch=1))


def installed(node_dir: Path, sha256: str) -> Callable[[], bool]:
    """Whether the node serves a verified model with that digest under the seeds' names."""
    def check() -> bool:
        link = node_dir / "models" / "ringrift_best_hex8_2p.pth"
        if os.readlink(link) != "canonical_hex8_2p.pth":
            return False
        return hashlib.sha256(link.read_bytes()).hexdigest() == sha256

    return check


async def log_of(bus: Bus, type_name: str) -> list[object]:
    """Every event of one type in the log."""
    return [e async for _seq, e in events(bus) if getattr(e, "type_name", lambda: "")() == type_name]


def distributor(fleet: Fleet, url: str, tmp_path: Path, node: str) -> ServiceProcess:
    config = write_node_config(tmp_path / f"{node}.yaml", tmp_path / node)
    return fleet.add(ServiceProcess("distributor", url, node, config, tmp_path))


async def test_a_promotion_reaches_every_node_and_a_late_joiner_catches_up(bus: Bus, nats_url: str, tmp_path: Path) -> None:
    ref = checkpoint(tmp_path / "n1" / "train" / "m1.pth", 3_000_000)
    publisher = Publisher(bus)
    for node in ("n1", "n2", "n3"):
        await as_term(publisher, HostOnline(node=node))
    with Fleet() as fleet:
        for node in ("n1", "n2", "n3"):
            distributor(fleet, nats_url, tmp_path, node)
        async with leader_loop_running(bus, distribution_loop, RrConfig(distribution=DistributionSettings(complete_check_s=0.2)),
                                       node=LEADER, nats_url=nats_url):
            await train_and_promote(bus, "m1", "n1", ref)
            for node in ("n1", "n2", "n3"):
                await wait_for(fleet, installed(tmp_path / node, ref.sha256), 30, f"m1 on {node}")
            done = await wait_for(fleet, lambda: log_of(bus, "MODEL_DISTRIBUTION_COMPLETE"), 15, "complete")
            assert done[0].model_id == "m1" and done[0].nodes == ["n1", "n2", "n3"] and done[0].epoch == 1  # type: ignore[attr-defined]
            # A node that was not there at the promotion installs it from the log when it starts.
            distributor(fleet, nats_url, tmp_path, "n4")
            await wait_for(fleet, installed(tmp_path / "n4", ref.sha256), 30, "m1 on the late joiner")
        assert fleet.stop() == [0, 0, 0, 0]
    distributed = await log_of(bus, "MODEL_DISTRIBUTED")
    assert sorted(e.node for e in distributed) == ["n1", "n2", "n3", "n4"]  # type: ignore[attr-defined]
    assert all(e.sha256 == ref.sha256 and e.path.endswith("canonical_hex8_2p.pth") for e in distributed)  # type: ignore[attr-defined]
    assert not await log_of(bus, "MODEL_DISTRIBUTION_FAILED")
    stored = await stat_object(bus, "rr_models", "m1")
    assert stored is not None and stored.sha256 == ref.sha256  # n1 uploaded its checkpoint on TRAINING_COMPLETE


async def test_a_tampered_chunk_is_detected_reported_and_refetched(bus: Bus, nats_url: str, tmp_path: Path) -> None:
    ref = checkpoint(tmp_path / "n1" / "train" / "m1.pth", 2_500_000)
    with Fleet() as fleet:
        distributor(fleet, nats_url, tmp_path, "n1")
        await train_and_promote(bus, "m1", "n1", ref, promote=False)
        uploaded = await wait_for(fleet, lambda: stat_object(bus, "rr_models", "m1"), 20, "the upload")
        # A chunk the uploader never wrote, appended to the object's chunk subject.
        await bus.nc.publish(f"$O.rr_models.C.{uploaded.nuid}", os.urandom(1000))
        await bus.nc.flush()
        await as_term(Publisher(bus), ModelPromoted(model_id="m1", board_type="hex8", num_players=2, sha256=ref.sha256,
                                                   size_bytes=ref.size_bytes, epoch=1))
        for node in ("n2", "n3"):
            distributor(fleet, nats_url, tmp_path, node)
        for node in ("n1", "n2", "n3"):
            await wait_for(fleet, installed(tmp_path / node, ref.sha256), 40, f"m1 on {node}")
        assert fleet.stop() == [0, 0, 0]
    failures = await log_of(bus, "MODEL_DISTRIBUTION_FAILED")
    assert failures and {e.kind for e in failures} == {"corrupt"}  # type: ignore[attr-defined]
    assert {e.object_nuid for e in failures} == {uploaded.nuid}  # type: ignore[attr-defined]
    repaired = await stat_object(bus, "rr_models", "m1")
    assert repaired is not None and repaired.nuid != uploaded.nuid and repaired.sha256 == ref.sha256
    assert not list((tmp_path / "n2" / "models" / ".incoming").iterdir())  # the corrupt download was discarded


async def test_rr_models_shows_the_promoted_model_and_its_holders(bus: Bus, nats_url: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main as rr

    ref = checkpoint(tmp_path / "n1" / "train" / "m1.pth", 200_000)
    await as_term(Publisher(bus), HostOnline(node="n1"))
    with Fleet() as fleet:
        distributor(fleet, nats_url, tmp_path, "n1")
        await train_and_promote(bus, "m1", "n1", ref)
        await wait_for(fleet, installed(tmp_path / "n1", ref.sha256), 20, "m1 on n1")
        await eventually(lambda: log_of(bus, "MODEL_DISTRIBUTED"), timeout=10)
    capsys.readouterr()
    assert await asyncio.to_thread(rr, ["models", "--json", "--nats", nats_url]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["config"], row["model_id"], row["generation"], row["sha256"], row["nodes"]) == ("hex8_2p", "m1", 1, ref.sha256, ["n1"])
    assert row["waiting"] == [] and row["needed_by"] == 1
    assert await asyncio.to_thread(rr, ["models", "--nats", nats_url]) == 0
    assert "hex8_2p" in capsys.readouterr().out
