"""Jobs as process groups, with real processes: timeouts, SIGTERM then SIGKILL, stuck detection, output."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]

from servicekit.childenv import child_env
from services.worker.jobs import Job, JobLimits

CHILD = [sys.executable, "-m", "tests.procs.worker_child"]


def job(tmp_path: Path, *args: str, progress: list[tuple[float | None, str]] | None = None, **limits: float) -> Job:
    values: dict[str, float] = {"timeout_s": 30.0, "grace_s": 5.0, "watch_interval_s": 0.1}
    values.update(limits)
    sink = progress if progress is not None else []
    return Job([*CHILD, "--pids", str(tmp_path / "pids"), *args], env=child_env(os.environ), cwd=tmp_path / "run",
               log_path=tmp_path / "job.log", limits=JobLimits(**values),  # type: ignore[arg-type]
               on_progress=lambda f, m: sink.append((f, m)))


def recorded_pids(tmp_path: Path) -> list[int]:
    return [int(line) for line in (tmp_path / "pids").read_text().split()]


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for whoever adopted it."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def test_a_job_past_its_timeout_gets_sigterm_and_is_reported_as_timed_out(tmp_path: Path) -> None:
    j = job(tmp_path, "--term-marker", str(tmp_path / "term"), "--progress", "-1", timeout_s=1.0)
    await j.start()
    outcome = await j.run()
    assert outcome.stop_reason is not None and outcome.stop_reason.startswith("timeout"), outcome
    assert (tmp_path / "term").read_text() == "SIGTERM\n"
    assert outcome.exit_code == 143 and not outcome.killed and not outcome.succeeded
    assert 1.0 <= outcome.duration_s < 10


async def test_a_job_that_ignores_sigterm_is_sigkilled_after_the_grace_with_its_children(tmp_path: Path, eventually) -> None:
    j = job(tmp_path, "--ignore-term", "--children", "2", "--progress", "-1", grace_s=0.5)
    pid = await j.start()
    running = asyncio.ensure_future(j.run())
    await eventually(lambda: (tmp_path / "pids").exists(), message="the job wrote its pids")
    pids = recorded_pids(tmp_path)
    assert pids[0] == pid and len(pids) == 3
    j.request_stop("cancelled")
    outcome = await asyncio.wait_for(running, 10)
    assert outcome.stop_reason == "cancelled" and outcome.killed and outcome.exit_code == -9
    assert all(gone(p) for p in pids), [(p, psutil.Process(p).status()) for p in pids if not gone(p)]


async def test_a_job_silent_for_stuck_after_s_is_stopped_as_stuck(tmp_path: Path) -> None:
    seen: list[tuple[float | None, str]] = []
    j = job(tmp_path, "--progress", "2", "--hang", stuck_after_s=0.8, progress=seen)
    await j.start()
    outcome = await j.run()
    assert outcome.stop_reason is not None and outcome.stop_reason.startswith("stuck: no progress line"), outcome
    assert [m for _, m in seen] == ["step 1", "step 2"]
    assert outcome.exit_code == -15


async def test_a_failing_job_reports_its_exit_status_and_the_tail_of_its_stderr(tmp_path: Path) -> None:
    j = job(tmp_path, "--fail", "3", "--stderr-bytes", "5000", stderr_tail_bytes=2048)
    await j.start()
    outcome = await j.run()
    assert (outcome.exit_code, outcome.stop_reason, outcome.succeeded) == (3, None, False)
    assert len(outcome.stderr_tail) == 2048 and outcome.stderr_tail.endswith("\nboom end")
    assert (tmp_path / "job.log").stat().st_size == 5000  # the whole stderr is in the attempt's log


async def test_children_that_outlive_a_successful_job_are_killed_with_its_group(tmp_path: Path) -> None:
    j = job(tmp_path, "--children", "2")
    await j.start()
    outcome = await j.run()
    assert outcome.succeeded and outcome.stop_reason is None
    assert all(gone(p) for p in recorded_pids(tmp_path))


async def test_a_command_that_does_not_exist_cannot_start(tmp_path: Path) -> None:
    j = Job(["/nonexistent/program"], env={}, cwd=tmp_path, log_path=tmp_path / "job.log",
            limits=JobLimits(timeout_s=5, grace_s=1), on_progress=lambda f, m: None)
    try:
        await j.start()
    except OSError as exc:
        assert "nonexistent" in str(exc) or exc.errno == 2
    else:
        raise AssertionError("started a program that does not exist")
