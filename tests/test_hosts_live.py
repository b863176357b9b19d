"""A hosts-file edit applies within the running term: the assigner and populator re-read a changed file, no leader change."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from config.hostsfile import LiveHosts
from config.settings import RrConfig, SchedulerSettings
from eventbus.connection import Bus
from eventbus.events import HostOnline, LeaderElected, WorkAdded, WorkAssigned
from eventbus.publisher import Publisher
from services.leader.assigner import assignment_loop
from tests.leader_harness import leader_loop_running
from tests.scheduler_harness import read_log

pytestmark = pytest.mark.timeout(60)

HOSTS = """
hosts:
  g1: {{status: ready, role: mixed, gpu: '{gpu}', max_parallel_jobs: 2}}
"""


def write_hosts(path: Path, gpu: str) -> None:
    path.write_text(HOSTS.format(gpu=gpu))


async def test_live_hosts_rereads_only_a_changed_file_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    write_hosts(path, "RTX 3060 12GB")
    hosts = LiveHosts(str(path), "test")
    first = await hosts.read()
    assert first is not None and first.hosts["g1"].vram_gb() == 12
    assert await hosts.read() is first  # unchanged: not parsed again
    write_hosts(path, "RTX 4090 24GB")
    changed = await hosts.read()
    assert changed is not None and changed.hosts["g1"].vram_gb() == 24
    path.write_text("hosts: [broken")
    os.utime(path, ns=(1, 1))
    assert await hosts.read() is changed  # a broken edit keeps the last good content
    assert await LiveHosts(None, "test").read() is None


def assigned_to(log: list[Any], work_id: str) -> str | None:
    return next((e.node for e in log if isinstance(e, WorkAssigned) and e.work_id == work_id), None)


async def test_a_hosts_file_gpu_change_makes_pending_training_assignable_without_a_leader_change(
    bus: Bus, tmp_path: Path, eventually: Any
) -> None:
    hosts = tmp_path / "hosts.yaml"
    write_hosts(hosts, "RTX 3060 12GB")  # below the 24 GB that training needs
    config = RrConfig(hosts_file=str(hosts), scheduler=SchedulerSettings(assign_every_s=0.2))
    pub = Publisher(bus)
    async with leader_loop_running(bus, assignment_loop, config):  # the term of epoch 1
        await pub.publish(HostOnline(node="g1", epoch=1))  # its membership decision
        await pub.publish(WorkAdded(work_id="train-1", work_type="training", board_type="hex8", num_players=2))
        await pub.publish(WorkAdded(work_id="self-1", work_type="selfplay", board_type="hex8", num_players=2))

        async def selfplay_assigned() -> bool:
            return assigned_to(await read_log(bus), "self-1") == "g1"

        await eventually(selfplay_assigned, timeout=20, message="the assigner runs rounds")
        assert assigned_to(await read_log(bus), "train-1") is None  # a round saw it and left it pending

        write_hosts(hosts, "RTX 4090 24GB")

        async def training_assigned() -> bool:
            return assigned_to(await read_log(bus), "train-1") == "g1"

        await eventually(training_assigned, timeout=20, message="training assigned after the hosts-file edit")
    elections = [e for e in await read_log(bus) if isinstance(e, LeaderElected)]
    assert len(elections) == 1  # the same term throughout
