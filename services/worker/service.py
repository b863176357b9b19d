"""The `worker` service: runs the jobs the scheduler's leader assigns to this node, as processes.

It consumes WORK_ASSIGNED (durable consumer `worker-<node>`) and WORK_CANCELLED (durable
`worker_cancels-<node>`), judges each against the leaders' elections as they were when it was
stored (services/worker/fencefeed.py: a deposed scheduler's assignments are fenced off), decides
with the pure services/worker/protocol.py, and runs what it accepts with services/worker/runner.py. At start
it first ends whatever a previous worker process left running (services/worker/recovery.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

from cluster.leadership.election import load_candidates
from config.hosts import load_hosts
from config.nodedirs import jobs_file_for, node_dirs
from config.sections.worker import WorkerSettings
from config.settings import RrConfig
from eventbus.consumer import ConsumerSpec, Delivery, EventConsumer
from eventbus.errors import BusError, InvalidEvent
from eventbus.events import Event, WorkAssigned, WorkCancelled, WorkStarted, utcnow
from eventbus.history import events as decoded_events
from eventbus.subjects import aggregate_filter, type_filter
from projections import work
from servicekit.auth.permissions import node_consumer
from servicekit.childenv import child_env
from servicekit.runtime import ServiceContext
from services.worker import protocol
from services.worker.candidates import CandidateFetcher
from services.worker.fencefeed import FenceFeed
from services.worker.firststart import membership_start
from services.worker.gpuidle import GpuIdleWatch, gpu_stuck_reason
from services.worker.protocol import AttemptKey, Claim, Claimed, Ignore, Refuse, Start
from services.worker.records import JobRecord, RecordBook
from services.worker.recovery import recover_record
from services.worker.results import attempt_failed
from services.worker.runner import Attempt, AttemptRunner, WorkerPaths, cannot_write

log = logging.getLogger(__name__)

WORKER_STOPPED = "worker stopping"
CONSUMER_EXPIRES_S = WorkerSettings().pull_expires_s  # the specs' pull requests unless the worker's settings say
# How often the fence is saved for the next start, which reads the elections after it: one
# crash costs the next start a read of this long a stretch of the log, not of all of it.
FENCE_SAVE_INTERVAL_S = 600.0


def worker_paths(config: RrConfig, node: str, env: dict[str, str], home: Path) -> WorkerPaths:
    """The worker's directories, from the one place that resolves them for every service (config/nodedirs.py)."""
    dirs = node_dirs(config, env, home)
    return WorkerPaths(worker_dir=dirs.worker_dir(node), models_dir=dirs.models_dir, received_dir=dirs.sync_dir)


def hosts_parallel_jobs(config: RrConfig, node: str) -> int | None:
    """This node's max_parallel_jobs in the hosts file, None when there is none or it does not list the node (blocking)."""
    if config.hosts_file is None:
        return None
    entry = load_hosts(config.hosts_file).hosts.get(node)
    return entry.max_parallel_jobs if entry is not None else None


def assignments_spec(node: str, pull_expires_s: float = CONSUMER_EXPIRES_S) -> ConsumerSpec:
    """The worker's durable consumer of assignments (first created at the node's newest HOST_ONLINE by Worker)."""
    return _one_type_spec(node_consumer("worker", node), "WORK_ASSIGNED", pull_expires_s)


def cancels_spec(node: str, pull_expires_s: float = CONSUMER_EXPIRES_S) -> ConsumerSpec:
    """The worker's durable consumer of cancels, from when it was first created."""
    return _one_type_spec(node_consumer("worker_cancels", node), "WORK_CANCELLED", pull_expires_s)


def _one_type_spec(durable: str, type_name: str, pull_expires_s: float) -> ConsumerSpec:
    # One filter per durable: a consumer with several filters, one of them a busy type, costs the
    # server seconds of CPU to set up anywhere behind a year's log's end (ops/bench/README.md,
    # "The worker's consumers at 22M"); one such filter alone is answered from its subject index.
    return ConsumerSpec(
        durable=durable,
        filter_subjects=(type_filter(type_name),),
        # A node that never ran a worker has no business with older events; the worker's
        # assignments durable starts at its node's newest HOST_ONLINE instead (firststart.py).
        deliver="new",
        pull_expires_s=pull_expires_s,
    )


class Worker:
    """One node's worker: the fence, the table of attempts it holds, and the loops around them."""

    def __init__(self, ctx: ServiceContext, paths: WorkerPaths, slots: int, env: dict[str, str]) -> None:
        self._ctx = ctx
        self._node = ctx.node_id
        self._settings: WorkerSettings = ctx.config.worker
        # Kept on disk between runs: a restart reads only the elections stored since (services/worker/savedfence.py).
        self._fences = FenceFeed(ctx.bus, ("assignments", "cancels"), saved_at=paths.worker_dir / "fence.json")
        self._attempts: dict[AttemptKey, Attempt] = {}
        self._book = RecordBook(paths.records_file, str(jobs_file_for(ctx.config, ctx.node_id, env, Path.home())))
        self._tasks: asyncio.TaskGroup | None = None
        expires = self._settings.pull_expires_s
        # First created at the node's newest HOST_ONLINE (services/worker/firststart.py), not at
        # the log's end: the leader may have assigned to the node before its worker ever ran.
        self.assignments = ctx.observed.consumer(
            EventConsumer(ctx.bus, assignments_spec(self._node, expires), {WorkAssigned: self._on_assigned},
                          first_start=lambda: membership_start(ctx.bus, self._node)))
        self.cancels = ctx.observed.consumer(
            EventConsumer(ctx.bus, cancels_spec(self._node, expires), {WorkCancelled: self._on_cancelled}))
        self.runner = AttemptRunner(
            publisher=ctx.publisher, node=self._node, settings=self._settings, paths=paths, book=self._book,
            env=child_env(env), python=self._settings.python or sys.executable, slots=slots,
            running_pgids=self._running_pgids, stopping=ctx.stopping, recheck=self._recheck_start,
            on_job_end=ctx.observed.jobs.record,
            candidates=CandidateFetcher(ctx.bus, ctx.config.distribution.bucket, paths.worker_dir / "candidates",
                                        wait_s=self._settings.candidate_wait_s),
            history=self.item_events,
        )

    async def run(self, gpu: GpuIdleWatch | None) -> None:
        """Recover, then consume and run jobs until stopping; then stop the jobs and report them."""
        left = await self._book.load()
        # Every election before now: the durables resume where the previous process stopped.
        await self._fences.prime(await load_candidates(self._ctx.config))
        await self._fences.save()  # a run that crashes still leaves the next one this far to skip
        # The cancels' durable exists before any assignment is judged: a cancel stored before it
        # was made is in the item's history that judging an assignment reads (protocol.decide_assignment),
        # and it refuses the attempt's WORK_STARTED (protocol.assignment_fence).
        await self.cancels.ensure()
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            for record in left:
                tasks.create_task(self._recover(record))
            consuming = [tasks.create_task(self.cancels.run()), tasks.create_task(self.assignments.run())]
            if gpu is not None and self._settings.gpu_idle_check and self._settings.stuck_after_s:
                tasks.create_task(self._watch_gpu(gpu))
            tasks.create_task(self._save_fence())
            await self._ctx.stopping.wait()
            for attempt in list(self._attempts.values()):
                attempt.request_stop(WORKER_STOPPED, self._settings.shutdown_grace_s, hand_back=True)
            await asyncio.gather(*(c.stop(timeout=self._settings.pull_expires_s + 2) for c in (self.assignments, self.cancels)))
            await self._fences.save()
            for task in consuming:
                task.cancel()

    def _running_pgids(self) -> list[int]:
        return [a.job.pgid for a in self._attempts.values() if a.job is not None]

    async def item_events(self, work_id: str) -> list[tuple[int, Event]]:
        """Everything the log says about one work item now: its subjects' events (seq, event), undecodable ones left out."""
        history: list[tuple[int, Event]] = []
        async for seq, event in decoded_events(self._ctx.bus, subject=aggregate_filter(WorkStarted.aggregate, work_id)):
            if isinstance(event, InvalidEvent):
                log.warning("worker: undecodable event at seq %d in %s's history skipped: %s", seq, work_id, event)
            else:
                history.append((seq, event))
        return history

    async def item(self, work_id: str) -> work.WorkItem | None:
        """The work item as its history makes it now, by the shared work fold."""
        return work.item_history(work_id, await self.item_events(work_id))

    async def _recheck_start(self, started: WorkStarted, assignment: WorkAssigned) -> Claim | Claimed | Ignore:
        """Judge a WORK_STARTED the fence refused, on the item's whole history as it is now (services/worker/claim.py)."""
        history = await self.item_events(assignment.work_id)
        held = {*self._attempts, *self._book.keys()}
        return protocol.recheck_start(started, assignment, history, held, utcnow())

    async def _on_cancelled(self, event: WorkCancelled, delivery: Delivery) -> None:
        self._stop_for(event, await self._fences.admit("cancels", event, delivery.stream_seq))

    async def _on_assigned(self, event: WorkAssigned, delivery: Delivery) -> None:
        admitted = await self._fences.admit("assignments", event, delivery.stream_seq)
        self._stop_for(event, admitted)
        screened = protocol.screen_assignment(event, self._node, admitted)
        if screened is not None:
            if event.node == self._node:
                log.warning("worker: ignored %s attempt %d: %s", event.work_id, event.attempt, screened.reason)
            return
        history = await self.item_events(event.work_id)
        held = {*self._attempts, *self._book.keys()}
        decision = protocol.decide_assignment(event, self._node, admitted, history, held, utcnow())
        if isinstance(decision, Start):
            await self._launch(Attempt(decision.assignment, decision.item, assigned_seq=delivery.stream_seq))
        elif isinstance(decision, Refuse):
            key = AttemptKey(event.work_id, event.attempt)
            await self.runner.finish(key, [attempt_failed(key, self._node, decision.reason)])
        else:
            log.info("worker: ignored %s attempt %d: %s", event.work_id, event.attempt, decision.reason)

    def _stop_for(self, event: Event, admitted: bool) -> None:
        for stop in protocol.decide_stops(event, admitted, self._attempts):
            log.info("worker: stopping %s attempt %d: %s", stop.key.work_id, stop.key.attempt, stop.reason)
            self._attempts[stop.key].request_stop(stop.reason, hand_back=stop.hand_back)

    async def _launch(self, attempt: Attempt) -> None:
        assert self._tasks is not None
        try:
            await self.runner.accept(attempt)
        except OSError as exc:  # a full disk: the attempt fails with the cause instead of the handler retrying forever
            await self.runner.finish(attempt.key, [attempt_failed(attempt.key, self._node, cannot_write(exc))])
            return
        self._attempts[attempt.key] = attempt
        if self._ctx.stopping.is_set():  # accepted while the consumer drained: it ends before it starts
            attempt.request_stop(WORKER_STOPPED, hand_back=True)
        self._tasks.create_task(self._run(attempt))

    async def _run(self, attempt: Attempt) -> None:
        try:
            await self.runner.run(attempt)
        except Exception:  # one attempt's bug must not take down the others: its record is recovered at restart
            log.exception("worker: attempt %s %d failed inside the worker", attempt.key.work_id, attempt.key.attempt)
        finally:
            self._attempts.pop(attempt.key, None)

    async def _recover(self, record: JobRecord) -> None:
        while True:
            try:
                await recover_record(record, history=self.item, publish=self._publish_all,
                                     grace_s=self._settings.grace_s)
                await self._book.remove(record.key)
                return
            except BusError as exc:
                log.warning("worker: recovery of %s attempt %d waits for the bus: %s", record.work_id, record.attempt, exc)
                if await self._ctx.wait_stopping(2.0):
                    return

    async def _publish_all(self, events: list[Event]) -> None:
        await self._ctx.publisher.publish_many(events)

    async def _save_fence(self) -> None:
        while not await self._ctx.wait_stopping(FENCE_SAVE_INTERVAL_S):
            await self._fences.save()

    async def _watch_gpu(self, gpu: GpuIdleWatch) -> None:
        every = min(self._settings.gpu_sample_s, self._settings.stuck_after_s / 4)
        while not await self._ctx.wait_stopping(every):
            running = [a for a in self._attempts.values() if a.job is not None and a.uses_gpu]
            if not running:
                gpu.forget()
                continue
            await gpu.sample()
            now = time.monotonic()
            for attempt in running:
                assert attempt.job is not None
                reason = gpu_stuck_reason(gpu.idle_since, attempt.job.started_at, now, self._settings.stuck_after_s)
                if reason is not None:
                    attempt.request_stop(reason)


async def main(ctx: ServiceContext) -> None:
    """Run this node's worker until stopped."""
    env = dict(os.environ)
    paths = worker_paths(ctx.config, ctx.node_id, env, Path.home())
    listed = await asyncio.to_thread(hosts_parallel_jobs, ctx.config, ctx.node_id)
    slots = protocol.parallel_jobs(listed, ctx.config.worker.max_parallel_jobs)
    gpu = await GpuIdleWatch.find() if ctx.config.worker.gpu_idle_check else None
    log.info("worker %s: %s, data in %s, GPU idle check %s", ctx.node_id,
             protocol.describe_parallel_jobs(listed, ctx.config.worker.max_parallel_jobs), paths.worker_dir,
             "on" if gpu else "off (no GPU)")
    await Worker(ctx, paths, slots, env).run(gpu)
