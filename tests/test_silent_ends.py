"""No silent ends: running jobs reach heartbeats without extra config, and the worker's start line says what is configured."""

from __future__ import annotations

from pathlib import Path

from config.nodedirs import jobs_file_for
from config.sections.membership import MembershipSettings
from config.sections.worker import WorkerSettings
from config.settings import RrConfig
from eventbus.heartbeats import RunningJob
from servicekit.jobsfile import read_running_jobs, write_running_jobs
from services.worker.protocol import describe_parallel_jobs
from services.worker.service import worker_paths


def test_the_worker_and_the_agent_share_a_running_jobs_file_by_default(tmp_path: Path) -> None:
    env = {"RR_DATA_DIR": str(tmp_path)}
    config = RrConfig()
    path = jobs_file_for(config, "g1", env, Path("/home/x"))
    assert path == worker_paths(config, "g1", env, Path("/home/x")).worker_dir / "running-jobs.json"
    write_running_jobs(path, [RunningJob(work_id="w1", attempt=2)])  # what the worker writes ...
    assert read_running_jobs(jobs_file_for(config, "g1", env, Path("/home/x"))) == [RunningJob(work_id="w1", attempt=2)]


def test_an_explicit_jobs_file_and_worker_data_dir_are_honoured(tmp_path: Path) -> None:
    explicit = RrConfig(membership=MembershipSettings(jobs_file=str(tmp_path / "jobs.json")))
    assert jobs_file_for(explicit, "g1", {}, Path("/home/x")) == tmp_path / "jobs.json"
    data = RrConfig(worker=WorkerSettings(data_dir=str(tmp_path / "d")))
    assert jobs_file_for(data, "g1", {}, Path("/home/x")) == tmp_path / "d" / "worker" / "g1" / "running-jobs.json"


def test_the_worker_start_line_prints_the_configured_value_and_its_source() -> None:
    assert describe_parallel_jobs(0, 2) == "the hosts file gives this node max_parallel_jobs: 0, so the scheduler assigns it no jobs"
    assert describe_parallel_jobs(3, 2) == "3 job(s) at once (hosts file max_parallel_jobs: 3)"
    assert "2 job(s) at once (worker.max_parallel_jobs: 2" in describe_parallel_jobs(None, 2)
