"""The worker service on a real nats-server, driven by assignments the test publishes as the scheduler would."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import msgspec
import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from config.settings import RrConfig
from eventbus.events import (
    EvaluationComplete,
    SelfplayComplete,
    TrainingComplete,
    WorkAttemptFailed,
    WorkCompleted,
    WorkHandedBack,
    WorkProgress,
    WorkStarted,
)
from eventbus.publisher import Publisher
from services.worker.records import JobRecord, read_records, write_records
from services.worker.service import hosts_parallel_jobs
from tests.bus_harness import provisioned_bus
from tests.lostcancel import LosingACancel
from tests.procs.worker_harness import CHILD, Scheduler, pids_in, watching, worker_running, worker_settings

NODE = "gpu-1"

SELFPLAY = ("{python} -m workload.selfplay --board {board_type} --num-players {num_players}"
            " --num-games {num_games} --model {model_path} --out {output_dir} --sims {sims} --seed 1")


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def records_file(tmp_path: Path, node: str = NODE) -> Path:
    return tmp_path / "data" / "worker" / node / "running.json"


async def test_an_assigned_selfplay_runs_the_reference_workload_and_reports_its_life_and_its_batch(
        nats_url: str, tmp_path: Path, eventually) -> None:
    config = RrConfig(worker=worker_settings(tmp_path, templates={"selfplay": SELFPLAY}))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        await sched.elected(7)
        async with worker_running(nats_url, NODE, config):
            await sched.add("w-sp", num_games=2, sims=4)
            await sched.assign("w-sp", NODE)
            await eventually(lambda: log.of(WorkCompleted) or log.of(WorkAttemptFailed), timeout=60, message="the attempt ended")
        assert log.of(WorkAttemptFailed) == []
        [started] = log.of(WorkStarted, work_id="w-sp", node=NODE, attempt=1)
        progress = log.of(WorkProgress, work_id="w-sp", attempt=1)
        [batch] = log.of(SelfplayComplete, work_id="w-sp")
        [done] = log.of(WorkCompleted, work_id="w-sp", node=NODE, attempt=1)
    assert started.pid and started.source == NODE
    # 2 games played side by side (batched selfplay): progress is rate-limited to its first line, which
    # says 1 of 2 when one game ended first and 2 of 2 when both ended in the same step
    assert len(progress) == 1 and progress[0].fraction in (0.5, 1.0)
    assert (batch.batch_id, batch.num_games, batch.board_type, batch.node, batch.model_id) == ("w-sp-a1", 2, "hex8", NODE, None)
    npz = Path(batch.data.path)  # type: ignore[union-attr]
    assert npz.suffix == ".npz" and npz.parent.name == "out"
    assert batch.data.sha256 == hashlib.sha256(npz.read_bytes()).hexdigest()  # type: ignore[union-attr]
    assert batch.data.size_bytes == npz.stat().st_size and batch.num_samples > 0  # type: ignore[union-attr]
    assert done.exit_code == 0 and done.duration_s > 0 and done.outputs == [batch.data]
    assert log.seq_of(started) < log.seq_of(progress[0]) < log.seq_of(batch) < log.seq_of(done)
    assert read_records(records_file(tmp_path)) == []


def install_as_best(models: Path, checkpoint: Path, model_id: str) -> None:
    """Lay a model out as the distributor does: a kept version, the canonical hard link, the seeds' symlink."""
    version = models / "versions" / "hex8_2p" / f"{model_id}.pth"
    version.parent.mkdir(parents=True)
    shutil.copyfile(checkpoint, version)
    os.link(version, models / "canonical_hex8_2p.pth")
    (models / "ringrift_best_hex8_2p.pth").symlink_to("canonical_hex8_2p.pth")


async def test_the_default_templates_run_selfplay_then_training_then_evaluation_against_the_best_model(
        nats_url: str, tmp_path: Path, eventually) -> None:
    models = tmp_path / "models"
    config = RrConfig(worker=worker_settings(tmp_path, models_dir=str(models)))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)

        async def run(work_id: str, work_type: str, **params: object) -> None:
            await sched.add(work_id, work_type, num_games=2, **params)
            await sched.assign(work_id, NODE)
            await eventually(lambda: log.of(WorkCompleted, work_id=work_id) or log.of(WorkAttemptFailed), timeout=60,
                             message=f"{work_id} ended")
            assert log.of(WorkAttemptFailed) == []

        async with worker_running(nats_url, NODE, config):
            await run("w-sp", "selfplay")
            [batch] = log.of(SelfplayComplete)
            await run("w-tr", "training", data=batch.data.path, input_batches=batch.batch_id)  # type: ignore[union-attr]
            [model] = log.of(TrainingComplete)
            install_as_best(models, Path(model.checkpoint.path), "best-7")  # type: ignore[union-attr]
            await run("w-ev", "evaluation", candidate=model.checkpoint.path, model_id=model.model_id,  # type: ignore[union-attr]
                      max_games=4)  # the SPRT gate against the best, capped short
    assert (model.input_batches, model.checkpoint.sha256) == (["w-sp-a1"], log.of(WorkCompleted, work_id="w-tr")[0].outputs[0].sha256)  # type: ignore[union-attr]
    assert model.model_id == f"hex8_2p-{model.checkpoint.sha256[:12]}" and model.metrics["samples"] > 0  # type: ignore[union-attr]
    results = {e.opponent: e for e in log.of(EvaluationComplete, work_id="w-ev")}
    assert set(results) == {"random", "best-7", "hex8_2p-search16"} and all(e.model_id == model.model_id for e in results.values())
    assert results["best-7"].gate and results["best-7"].games <= 4  # the gate: the best, at equal simulations
    assert results["random"].games == results["hex8_2p-search16"].games == 2  # rating matches: num_games each


async def test_a_failing_command_ends_the_attempt_with_its_exit_status_and_stderr_tail(nats_url: str, tmp_path: Path, eventually) -> None:
    config = RrConfig(worker=worker_settings(tmp_path, templates={"evaluation": CHILD + " --fail 3 --stderr-bytes 3000"}))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        async with worker_running(nats_url, NODE, config) as ctx:
            await sched.add("w-bad", "evaluation")
            await sched.assign("w-bad", NODE)
            [failed] = await eventually(lambda: log.of(WorkAttemptFailed, work_id="w-bad"), timeout=20, message="failure reported")
            jobs = ctx.observed.jobs.statistics()  # what the rr.job.duration metric and the micro status report
    assert jobs.count == {"failed": 1} and jobs.max_s > 0
    assert (failed.node, failed.attempt, failed.exit_code, failed.reason) == (NODE, 1, 3, "exited with status 3")
    assert len(failed.stderr_tail) == 2048 and failed.stderr_tail.endswith("boom end")
    assert log.of(WorkStarted, work_id="w-bad") and not log.of(WorkCompleted)


async def test_a_cancel_stops_the_running_job_and_reports_it_cancelled(nats_url: str, tmp_path: Path, eventually) -> None:
    config = RrConfig(worker=worker_settings(tmp_path, templates={"selfplay": CHILD + " --progress -1 --children 1"}))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        async with worker_running(nats_url, NODE, config):
            await sched.add("w-long")
            await sched.assign("w-long", NODE)
            await eventually(lambda: log.of(WorkProgress, work_id="w-long"), timeout=20, message="the job runs")
            pid_file = next((tmp_path / "data").rglob("pids"))
            pids = pids_in(pid_file)
            await sched.cancel("w-long", reason="operator")
            [failed] = await eventually(lambda: log.of(WorkAttemptFailed, work_id="w-long"), timeout=20, message="cancel reported")
    assert failed.reason == "cancelled: operator" and failed.exit_code == -15
    assert all(gone(p) for p in pids)


async def test_assignments_for_another_node_or_from_a_deposed_leader_are_ignored(nats_url: str, tmp_path: Path, eventually) -> None:
    config = RrConfig(worker=worker_settings(tmp_path, templates={"chore": "true"}))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        await sched.elected(7)
        async with worker_running(nats_url, NODE, config):
            for work_id in ("w-other", "w-stale", "w-ok"):
                await sched.add(work_id, "chore")
            await sched.elected(9)
            await sched.assign("w-other", "gpu-2")
            await sched.assign("w-stale", NODE, epoch=7)
            await sched.assign("w-ok", NODE)
            # The worker handles events in log order: once w-ok is done, the two before it were decided.
            await eventually(lambda: log.of(WorkCompleted, work_id="w-ok"), timeout=20, message="w-ok ran")
    assert [e.work_id for e in log.of(WorkStarted)] == ["w-ok"]
    assert log.of(WorkAttemptFailed) == []


async def test_new_jobs_are_refused_while_the_nodes_job_processes_are_at_the_runaway_cap(nats_url: str, tmp_path: Path, eventually) -> None:
    templates = {"selfplay": CHILD + " --progress -1 --children 3", "chore": "true"}
    config = RrConfig(worker=worker_settings(tmp_path, templates=templates, max_processes=4, max_parallel_jobs=2))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        async with worker_running(nats_url, NODE, config):
            await sched.add("w-many")
            await sched.assign("w-many", NODE)
            await eventually(lambda: any((tmp_path / "data").rglob("pids")), timeout=20, message="four processes run")
            await sched.add("w-next", "chore")
            await sched.assign("w-next", NODE)
            [refused] = await eventually(lambda: log.of(WorkAttemptFailed, work_id="w-next"), timeout=20, message="refusal")
            await sched.cancel("w-many")
            await eventually(lambda: log.of(WorkAttemptFailed, work_id="w-many"), timeout=20, message="cancel")
    assert refused.reason.startswith("refused: this node's jobs run 4 processes, at or over worker.max_processes=4")
    assert not log.of(WorkStarted, work_id="w-next")


async def test_a_job_on_a_gpu_node_whose_gpu_stays_idle_is_stopped_as_stuck(
        nats_url: str, tmp_path: Path, eventually, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 81559, 0'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    settings = worker_settings(tmp_path, templates={"training": CHILD + " --progress -1"}, gpu_idle_check=True,
                               stuck_after_s=1.0, gpu_sample_s=0.1)
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        async with worker_running(nats_url, NODE, RrConfig(worker=settings)):
            await sched.add("w-idle", "training")
            await sched.assign("w-idle", NODE)
            [stuck] = await eventually(lambda: log.of(WorkAttemptFailed, work_id="w-idle"), timeout=20, message="stuck")
    assert stuck.reason.startswith("stuck: GPU idle (0% utilization) for"), stuck.reason


async def test_a_worker_that_stops_hands_its_running_jobs_back(nats_url: str, tmp_path: Path, eventually) -> None:
    config = RrConfig(worker=worker_settings(tmp_path, templates={"selfplay": CHILD + " --progress -1 --ignore-term"}))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        async with worker_running(nats_url, NODE, config):
            await sched.add("w-run")
            await sched.assign("w-run", NODE)
            await eventually(lambda: log.of(WorkProgress, work_id="w-run"), timeout=20, message="the job runs")
            pids = pids_in(next((tmp_path / "data").rglob("pids")))
        [back] = await eventually(lambda: log.of(WorkHandedBack, work_id="w-run"), timeout=10, message="hand-back reported")
    assert (back.node, back.attempt, back.reason) == (NODE, 1, "worker stopping")
    assert log.of(WorkAttemptFailed, work_id="w-run") == [], "a worker stopping is no failed attempt"
    assert all(gone(p) for p in pids)
    assert read_records(records_file(tmp_path)) == []


async def test_assignments_beyond_max_parallel_jobs_wait_for_a_slot(nats_url: str, tmp_path: Path, eventually) -> None:
    config = RrConfig(worker=worker_settings(tmp_path, templates={"chore": CHILD + " --sleep 0.5"}, max_parallel_jobs=1))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        async with worker_running(nats_url, NODE, config):
            for work_id in ("w-a", "w-b"):
                await sched.add(work_id, "chore")
                await sched.assign(work_id, NODE)
            await eventually(lambda: len(log.of(WorkCompleted)) == 2, timeout=20, message="both ran")
    [done_a] = log.of(WorkCompleted, work_id="w-a")
    [started_b] = log.of(WorkStarted, work_id="w-b")
    assert log.seq_of(done_a) < log.seq_of(started_b)


def test_max_parallel_jobs_comes_from_this_nodes_hosts_file_entry(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  gpu-1: {role: selfplay, max_parallel_jobs: 4}\n  gpu-2: {role: selfplay}\n")
    config = RrConfig(hosts_file=str(hosts))
    assert [hosts_parallel_jobs(config, n) for n in ("gpu-1", "gpu-2", "laptop")] == [4, 1, None]
    assert hosts_parallel_jobs(RrConfig(), "gpu-1") is None


def test_a_record_survives_a_round_trip_through_its_file(tmp_path: Path) -> None:
    record = JobRecord(work_id="w-1", attempt=2, node=NODE, pid=123, create_time=1.5,
                       pending=[WorkCompleted(work_id="w-1", node=NODE, attempt=2, id="gpu-1:x")])
    write_records(records_file(tmp_path), [record])
    assert read_records(records_file(tmp_path)) == [record]
    assert msgspec.json.decode(records_file(tmp_path).read_bytes())[0]["pending"][0]["type"] == "WORK_COMPLETED"


async def test_a_job_that_ends_while_its_progress_is_published_still_reports_its_end(
        nats_url: str, tmp_path: Path, eventually, monkeypatch: pytest.MonkeyPatch) -> None:
    # The job's end cancels its progress publisher once; Python 3.11's wait_for, under the publish,
    # returns the ack and drops a cancellation that lands with it. The publisher then waited for
    # progress that never came, and the attempt with it: its end was never reported.
    losing = LosingACancel(Publisher.publish, when=lambda publisher, event, **_: isinstance(event, WorkProgress))
    monkeypatch.setattr(Publisher, "publish", losing)
    config = RrConfig(worker=worker_settings(tmp_path, templates={"selfplay": CHILD + " --progress 3"}, progress_interval_s=0.1))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        async with worker_running(nats_url, NODE, config):
            await sched.add("w-p")
            await sched.assign("w-p", NODE)
            await eventually(lambda: log.of(WorkCompleted, work_id="w-p"), timeout=20, message="the job's end reported")
    assert losing.calls >= 1 and log.of(WorkProgress, work_id="w-p")
