"""The agent: beats into RR_TELEMETRY with the node's resources, roles and jobs; a last `leaving` beat on a clean stop."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

import psutil
import pytest

from config.nodedirs import measured_disk
from config.sections.membership import MembershipSettings
from config.settings import RrConfig
from eventbus.heartbeats import Heartbeat, RunningJob, latest_heartbeats, watch_heartbeats
from eventbus.history import last_sequence
from servicekit.gpuprobe import gpu_device_files, parse_nvidia_smi, torch_may_see_gpus
from servicekit.jobsfile import read_running_jobs, write_running_jobs
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext
from services.agent import service as agent
from services.agent.gpus import GpuSource
from tests.bus_harness import provisioned_bus
from tests.helpers import eventually

HOSTS = """
hosts:
  gpu-1: {role: selfplay, roles: [selfplay, nn_training], gpu: "RTX 5090 24GB"}
  gpu-2: {role: evaluation}
p2p_voters: [gpu-1]
"""

SMI_OUTPUT = "NVIDIA H100 80GB HBM3, 81559, 37\nNVIDIA GeForce RTX 4090, Ti, 24564, [N/A]\n\n"


def config(tmp_path: Path, **membership: object) -> RrConfig:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    values: dict[str, object] = {"heartbeat_interval_s": 0.2, "gpu_probe": "none"}
    values.update(membership)
    return RrConfig(hosts_file=str(hosts), membership=MembershipSettings(**values))  # type: ignore[arg-type]


async def test_an_agent_beats_with_resources_roles_and_jobs_and_says_goodbye_when_stopped(nats_url: str, tmp_path: Path, eventually) -> None:
    jobs = [RunningJob(work_id="w-1", attempt=2, work_type="selfplay", pid=4242)]
    write_running_jobs(tmp_path / "jobs.json", jobs)
    cfg = config(tmp_path, jobs_file=str(tmp_path / "jobs.json"))
    beats: list[Heartbeat] = []
    async with provisioned_bus(nats_url, node_id="gpu-1") as bus:
        watch = await watch_heartbeats(bus, beats.append)
        ctx = ServiceContext("agent", bus, cfg, CommonOptions(nats_url=nats_url, node_id="gpu-1", config_path=None))
        running = asyncio.ensure_future(agent.main(ctx))
        try:
            await eventually(lambda: len(beats) >= 3 or running.done(), message="three beats")
            ctx.stopping.set()
            await asyncio.wait_for(running, timeout=10)
            await eventually(lambda: beats[-1].leaving, message="a leaving beat after the stop")
        finally:
            ctx.stopping.set()
            await watch.stop()
        first = beats[0]
        assert [b.seq for b in beats] == list(range(1, len(beats) + 1))
        assert (first.node, first.interval_s, first.roles, first.jobs) == ("gpu-1", 0.2, ["selfplay", "nn_training"], jobs)
        assert first.version and first.started is not None and not first.leaving
        r = first.resources
        assert r.cpu_count >= 1 and r.memory_gb > 0 and 0 <= r.memory_percent <= 100 and r.disk_free_gb > 0 and r.gpus == []
        assert [b.leaving for b in beats].count(True) == 1
        stored = await latest_heartbeats(bus)
        assert [(s.beat.node, s.beat.seq, s.beat.leaving) for s in stored] == [("gpu-1", beats[-1].seq, True)]
        assert await last_sequence(bus) == 0  # beats are telemetry: nothing in the forensic log


async def test_an_agent_keeps_its_cadence_and_reports_no_roles_for_a_node_the_hosts_file_does_not_list(nats_url: str, tmp_path: Path, eventually) -> None:
    beats: list[Heartbeat] = []
    async with provisioned_bus(nats_url, node_id="cpu-9") as bus:
        watch = await watch_heartbeats(bus, beats.append)
        ctx = ServiceContext("agent", bus, config(tmp_path), CommonOptions(nats_url=nats_url, node_id="cpu-9", config_path=None))
        running = asyncio.ensure_future(agent.main(ctx))
        try:
            await eventually(lambda: len(beats) >= 6 or running.done(), message="six beats")
        finally:
            ctx.stopping.set()
            await asyncio.wait_for(running, timeout=10)
            await watch.stop()
    assert beats[0].roles == []
    spans = [(b.ts - a.ts).total_seconds() for a, b in zip(beats[:5], beats[1:6])]
    assert all(0.1 < s < 1.0 for s in spans), spans  # ~0.2 s apart; generous for a loaded machine


def test_nvidia_smi_output_is_read_including_names_with_commas_and_unknown_values() -> None:
    gpus = parse_nvidia_smi(SMI_OUTPUT)
    assert [(g.name, g.memory_gb, g.utilization) for g in gpus] == [
        ("NVIDIA H100 80GB HBM3", 79.65, 37.0),
        ("NVIDIA GeForce RTX 4090, Ti", 23.99, None),
    ]


async def test_gpus_come_from_nvidia_smi_when_it_is_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nprintf '{SMI_OUTPUT}'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    source = GpuSource("auto")
    await source.start(timeout=10)
    assert source.method == "nvidia-smi"
    assert [g.name for g in await source.current()] == ["NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090, Ti"]


async def test_without_nvidia_smi_gpus_come_from_torch_which_sees_none_on_a_cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.agent.gpus.nvidia_smi_path", lambda: None)
    source = GpuSource("auto", torch_may_see_gpus=lambda: True)  # a GPU driver, but this torch is the CPU build
    await source.start(timeout=60)
    assert source.method == "torch"
    assert await source.current() == []
    await source.close()


async def test_without_nvidia_smi_or_gpu_device_files_torch_is_not_imported_and_there_are_no_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.agent.gpus.nvidia_smi_path", lambda: None)
    ran = tmp_path / "probe-ran"
    probe = [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').close(); print('[]')", str(ran)]
    source = GpuSource("auto", torch_probe=probe, torch_may_see_gpus=lambda: False)
    await source.start(timeout=60)
    await source.close()
    assert source.method == "none" and await source.current() == []
    assert not ran.exists()  # the probe (torch's import: seconds of CPU) was never started


async def test_a_torch_probe_asked_for_by_name_runs_even_without_gpu_device_files(tmp_path: Path) -> None:
    gpu = '[{"name": "Fake GPU", "memory_gb": 8.0}]'
    source = GpuSource("torch", torch_probe=[sys.executable, "-c", f"print({gpu!r})"], torch_may_see_gpus=lambda: False)
    await source.start(timeout=60)
    assert [g.name for g in await source.current()] == ["Fake GPU"]


def test_gpu_device_files_are_the_drivers_and_torch_is_asked_only_where_they_or_its_platform_allow_a_gpu(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm", "null", "kfd"):
        (tmp_path / name).touch()
    assert gpu_device_files(tmp_path) == ["kfd", "nvidia0", "nvidiactl"]
    assert gpu_device_files(tmp_path / "absent") == []
    assert torch_may_see_gpus("linux", ["nvidiactl"]) and not torch_may_see_gpus("linux", [])
    assert not torch_may_see_gpus("darwin", []) and torch_may_see_gpus("win32", [])


async def test_a_stop_during_a_slow_gpu_probe_ends_the_wait_and_kills_the_probe(tmp_path: Path) -> None:
    pid_file = tmp_path / "probe.pid"
    slow = [sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)", str(pid_file)]
    source = GpuSource("torch", torch_probe=slow)
    stopping = asyncio.Event()
    starting = asyncio.ensure_future(source.start(timeout=120, stopping=stopping))
    await eventually(lambda: pid_file.exists() and pid_file.read_text() != "", message="the probe runs")
    stopping.set()
    await asyncio.wait_for(starting, 30)  # the stop ends the wait, not the probe's 120 s
    await asyncio.wait_for(source.close(), 30)
    assert not psutil.pid_exists(int(pid_file.read_text()))
    assert await source.current() == []


async def test_a_failing_gpu_probe_reports_no_gpus() -> None:
    source = GpuSource("torch", torch_probe=[sys.executable, "-c", "raise SystemExit(3)"])
    await source.start(timeout=60)
    assert await source.current() == [] and source.method == "none"


def test_the_running_jobs_file_round_trips_and_a_missing_or_broken_one_means_no_jobs(tmp_path: Path) -> None:
    jobs = [RunningJob(work_id="w-1"), RunningJob(work_id="w-2", attempt=3, work_type="training")]
    write_running_jobs(tmp_path / "deep" / "jobs.json", jobs)
    assert read_running_jobs(tmp_path / "deep" / "jobs.json") == jobs
    assert read_running_jobs(tmp_path / "absent.json") == []
    assert read_running_jobs(None) == []
    (tmp_path / "broken.json").write_text("{not json")
    assert read_running_jobs(tmp_path / "broken.json") == []


def test_the_free_space_reported_is_the_data_dirs_unless_a_path_is_configured(tmp_path: Path) -> None:
    data = tmp_path / "mounted-data"
    data.mkdir()
    assert measured_disk(None, {"RR_DATA_DIR": str(data)}, tmp_path) == str(data)
    # Before `rr up` made it, the nearest existing parent: the same filesystem the data dir will be on.
    assert measured_disk(None, {"RR_DATA_DIR": str(data / "not" / "yet")}, tmp_path) == str(data)
    assert measured_disk(None, {}, tmp_path) == str(tmp_path)
    assert measured_disk("/", {"RR_DATA_DIR": str(data)}, tmp_path) == "/"
