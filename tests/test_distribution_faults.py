"""Distribution under faults, agents in this process: a full disk, wrong or truncated objects, retention and pruning."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from config.sections.distribution import DistributionSettings
from config.settings import RrConfig
from eventbus.connection import Bus, connect
from eventbus.events import ModelPromoted
from eventbus.history import events
from eventbus.objectdelete import delete_object
from eventbus.objects import BucketSpec, ObjectCorrupt, ensure_bucket, fetch_to_file, put_file, stat_object
from eventbus.publisher import Publisher
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext
from services.distributor.agent import DistributorAgent
from services.leader.distribution import prune_store
from tests.bus_harness import provisioned_bus
from tests.helpers import eventually, mounted_tmpfs
from tests.randomfiles import random_artifact
from tests.terms import as_term

pytestmark = pytest.mark.timeout(60)

FAST = DistributionSettings(retry_initial_s=0.1, retry_max_s=0.5, missing_grace_s=2.0, free_margin_mb=0.0,
                            check_interval_s=0.5, idle_timeout_s=5.0)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with provisioned_bus(nats_url, node_id="test") as connected:
        await ensure_bucket(connected, BucketSpec(name="rr_models"))
        yield connected


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root to mount; skipped otherwise), unmounted afterwards."""
    try:
        with mounted_tmpfs(tmp_path / "small", "1m") as mountpoint:
            yield mountpoint
    except OSError as exc:
        pytest.skip(str(exc))


@contextlib.asynccontextmanager
async def agent_running(url: str, node: str, root: Path, settings: DistributionSettings = FAST,
                        free_bytes: Callable[[Path], int] | None = None) -> AsyncIterator[tuple[DistributorAgent, asyncio.Task[None]]]:
    """A distributor for `node` in this process, with its own connection."""
    node_bus = await connect(url, node_id=node)
    extra = {"free_bytes": free_bytes} if free_bytes else {}
    agent = DistributorAgent(node_bus, Publisher(node_bus), node, root, settings, **extra)  # type: ignore[arg-type]
    stopping = asyncio.Event()
    task = asyncio.get_running_loop().create_task(agent.run(stopping))
    try:
        yield agent, task
    finally:
        stopping.set()
        await asyncio.wait_for(task, 15)
        await node_bus.close()


async def store_and_promote(bus: Bus, tmp_path: Path, model_id: str, size: int, *, minutes: int = 0) -> str:
    """Put a random model in the bucket as its trainer would, then promote it; its sha256."""
    path = tmp_path / f"{model_id}.pth"
    sha = random_artifact(path, size).sha256
    await put_file(bus, "rr_models", model_id, path)
    await as_term(Publisher(bus), ModelPromoted(model_id=model_id, board_type="hex8", num_players=2, sha256=sha,
                                               size_bytes=size, generation=minutes, epoch=1))
    return sha


async def failures(bus: Bus, node: str) -> list[object]:
    return [e async for _s, e in events(bus, subject=f"rr.evt.model.*.MODEL_DISTRIBUTION_FAILED.{node}")]


def serving(root: Path) -> str:
    return hashlib.sha256((root / "ringrift_best_hex8_2p.pth").read_bytes()).hexdigest()


async def test_a_full_disk_is_reported_and_retried_until_space_is_freed(bus: Bus, nats_url: str, tmp_path: Path, small_disk: Path) -> None:
    sha = await store_and_promote(bus, tmp_path, "m1", 2_000_000)
    probe_says_plenty = lambda _path: 1 << 40  # noqa: E731 - the free-space check passes, the write hits ENOSPC
    async with agent_running(nats_url, "checked", small_disk / "a") as (_a, checked), \
            agent_running(nats_url, "lied-to", small_disk / "b", free_bytes=probe_says_plenty) as (_b, lied_to):
        [first] = await eventually(lambda: failures(bus, "checked"), timeout=10)
        assert first.kind == "disk_full" and "MiB free" in first.reason  # type: ignore[attr-defined]
        written = await eventually(lambda: failures(bus, "lied-to"), timeout=10)
        assert written[0].kind == "disk_full" and "disk full writing" in written[0].reason  # type: ignore[attr-defined]
        assert not list((small_disk / "b" / ".incoming").iterdir())  # the partial download was removed
        await eventually(lambda: failed_at_least(bus, "lied-to", 2), timeout=10, message="retried after backoff")
        assert not checked.done() and not lied_to.done()  # the agents keep going
        subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
        await eventually(lambda: serving(small_disk / "a") == sha, timeout=15, message="installed after space was freed")
        await eventually(lambda: serving(small_disk / "b") == sha, timeout=15)


async def failed_at_least(bus: Bus, node: str, count: int) -> bool:
    return len(await failures(bus, node)) >= count


async def test_the_free_space_check_needs_size_plus_margin(bus: Bus, nats_url: str, tmp_path: Path) -> None:
    await store_and_promote(bus, tmp_path, "m1", 100_000)
    settings = DistributionSettings(retry_initial_s=5.0, free_margin_mb=1.0)
    async with agent_running(nats_url, "tight", tmp_path / "tight", settings, free_bytes=lambda _p: 1_000_000) as (agent, _task):
        [failure] = await eventually(lambda: failures(bus, "tight"), timeout=10)
        assert failure.kind == "disk_full" and failure.retry_in_s > 0  # type: ignore[attr-defined]
        assert agent.statistics().downloaded == 0


async def test_wrong_and_truncated_objects_are_refused(bus: Bus, tmp_path: Path) -> None:
    right = os.urandom(300_000)
    wrong = tmp_path / "wrong"
    wrong.write_bytes(os.urandom(300_000))
    await put_file(bus, "rr_models", "m1", wrong)
    with pytest.raises(ObjectCorrupt, match="expected"):
        await fetch_to_file(bus, "rr_models", "m1", tmp_path / "out", expect_sha256=hashlib.sha256(right).hexdigest())
    short = tmp_path / "short"
    short.write_bytes(right[:1000])
    await put_file(bus, "rr_models", "m1", short)
    with pytest.raises(ObjectCorrupt, match="expected 300000"):
        await fetch_to_file(bus, "rr_models", "m1", tmp_path / "out", expect_size=len(right))
    (tmp_path / "right").write_bytes(right)
    await put_file(bus, "rr_models", "m1", tmp_path / "right")
    fetched = await fetch_to_file(bus, "rr_models", "m1", tmp_path / "out", expect_sha256=hashlib.sha256(right).hexdigest(),
                                  expect_size=len(right))
    assert (tmp_path / "out").read_bytes() == right and fetched.object.size == len(right)


async def test_old_versions_are_deleted_on_nodes_and_in_the_store(bus: Bus, nats_url: str, tmp_path: Path) -> None:
    settings = DistributionSettings(retry_initial_s=0.1, keep_last=1, free_margin_mb=0.0, check_interval_s=0.3)
    root = tmp_path / "node"
    async with agent_running(nats_url, "n1", root, settings):
        for i, model_id in enumerate(["m1", "m2", "m3"], start=1):
            sha = await store_and_promote(bus, tmp_path, model_id, 50_000, minutes=i)
            await eventually(lambda: serving(root) == sha, timeout=10, message=model_id)  # noqa: B023
        await eventually(lambda: sorted(p.name for p in (root / "versions" / "hex8_2p").iterdir()) == ["m2.pth", "m3.pth"], timeout=10)
    ctx = ServiceContext("scheduler", bus, RrConfig(distribution=settings), CommonOptions(nats_url=nats_url, node_id="test", config_path=None))
    from projections import models
    from servicekit.rebuild import state_at_seq

    state = (await state_at_seq(bus, models.PROJECTION, use_snapshot=False)).state
    assert await prune_store(ctx, state, settings) == 1
    assert await stat_object(bus, "rr_models", "m1") is None and await stat_object(bus, "rr_models", "m2") is not None


async def test_a_conditional_delete_never_removes_a_newer_version(bus: Bus, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"one")
    second.write_bytes(b"two")
    old = await put_file(bus, "rr_models", "m1", first)
    new = await put_file(bus, "rr_models", "m1", second)
    assert not await delete_object(bus, "rr_models", "m1", only_nuid=old.nuid)
    assert (await stat_object(bus, "rr_models", "m1")).nuid == new.nuid  # type: ignore[union-attr]
    assert await delete_object(bus, "rr_models", "m1", only_nuid=new.nuid)
    assert await stat_object(bus, "rr_models", "m1") is None and not await delete_object(bus, "rr_models", "m1")
