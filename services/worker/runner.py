"""Running one accepted attempt: wait for a slot, expand its template, run it, publish its life and its end.

Every attempt ends with events whatever happens (cancelled while queued, refused by the runaway
cap, a bad template, a command that cannot start, a non-zero exit, a timeout); the end events
are recorded before they are published (services/worker/records.py), so a crash in between is
repaired by the next worker process instead of leaving the attempt open.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import msgspec

from config.nodedirs import received_path
from config.sections.templates import TemplateError
from config.sections.worker import WorkerSettings
from eventbus import tracing
from eventbus.errors import BusError, Fenced
from eventbus.events import BatchInput, Event, WorkAdded, WorkAssigned, WorkHandedBack, WorkProgress, WorkStarted, utcnow
from eventbus.publisher import FenceToken, Publisher
from eventbus.tasks import raise_if_cancelled
from servicekit.templates import WorkerValues, expand, template_values
from services.worker import outputs, processes
from services.worker.candidates import CandidateFetcher, CandidateUnavailable, candidate_ref, with_candidate
from services.worker.claim import Recheck, Unclaimed, claim_start
from services.worker.jobs import Job, JobLimits
from services.worker.protocol import AttemptKey, Ignore, assignment_fence, recheck_hand_back, started_fence
from services.worker.records import JobRecord, RecordBook
from services.worker.results import attempt_failed, handed_back, outcome_events, training_started

log = logging.getLogger(__name__)

PUBLISH_RETRY_S = (0.5, 1.0, 2.0, 5.0)
HAND_BACK_TRIES = 5  # refusals judged "try again" in a row before a hand-back is dropped
DATA_POLL_S = (0.5, 1.0, 2.0, 5.0)  # how often a training job waiting for synced batches looks again

ItemHistory = Callable[[str], Awaitable[Sequence[tuple[int, Event]]]]  # a work item's events (seq, event) now
Refenced = Callable[[], Awaitable[FenceToken | None]]  # after a refusal: the fence to try again with, None to drop


class InputsUnavailable(Exception):
    """A job's input files are not on this node; the message is the attempt's failure reason."""


class WorkerPaths(msgspec.Struct, frozen=True, kw_only=True):
    """Where this node's worker keeps its records, its attempts' files, and looks for models."""

    worker_dir: Path
    models_dir: Path
    received_dir: Path | None = None  # where the sync service puts batches copied here (config/nodedirs.py)

    @property
    def records_file(self) -> Path:
        """The jobs this worker holds (services/worker/records.py)."""
        return self.worker_dir / "running.json"


class Attempt:
    """One accepted attempt, from queued to ended: what it runs, and the stop asked of it."""

    def __init__(self, assignment: WorkAssigned, item: WorkAdded, assigned_seq: int = 0) -> None:
        self.key = AttemptKey(assignment.work_id, assignment.attempt)
        self.assignment = assignment
        self.assigned_seq = assigned_seq  # the assignment's stream sequence: WORK_STARTED's fence (claim.py)
        # The newest of the item's events this worker knows of (its assignment, its own start and
        # progress): the fence of its hand-back, so none is stored after another end of the attempt.
        self.item_seq = assigned_seq
        self.item = item
        self.job: Job | None = None
        self.stop_reason: str | None = None
        self.stop_grace_s: float | None = None
        self.hand_back = False  # stopped because the worker stops: its end is a hand-back, not a failure
        # Whether an idle GPU means it is stuck: training, or a job given a model to run. Selfplay
        # before the first promotion searches without a net and never touches the GPU.
        self.uses_gpu = False
        self.best_model: outputs.BestModel | None = None  # the model {model_path} named, if any
        self.progress: tuple[float | None, str] = (None, "")
        self.progress_changed = asyncio.Event()

    def request_stop(self, reason: str, grace_s: float | None = None, hand_back: bool = False) -> None:
        """Stop it: before it starts it never will; running, its group gets SIGTERM, then SIGKILL after the grace.

        `hand_back`: the worker itself stops, so the attempt is handed back rather than failed.
        """
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_grace_s = grace_s
            self.hand_back = hand_back
        if self.job is not None:
            self.job.request_stop(reason, grace_s)

    def on_progress(self, fraction: float | None, message: str) -> None:
        """A progress line from the job."""
        self.progress = (fraction, message)
        self.progress_changed.set()


def cannot_write(exc: OSError) -> str:
    """The reason of an attempt this node could not record or run for lack of a writable disk."""
    where = f" ({exc.filename})" if exc.filename else ""
    return f"this node cannot write{where}: {exc.strerror or exc}; free space in worker.data_dir"


class AttemptRunner:
    """Runs attempts for one node, at most `slots` at a time."""

    def __init__(self, *, publisher: Publisher, node: str, settings: WorkerSettings, paths: WorkerPaths,
                 book: RecordBook, env: Mapping[str, str], python: str, slots: int,
                 running_pgids: Callable[[], list[int]], stopping: asyncio.Event,
                 recheck: Recheck, on_job_end: Callable[[float, str], None] | None = None,
                 candidates: CandidateFetcher | None = None, history: ItemHistory | None = None) -> None:
        self._publisher = publisher
        self._history = history  # the item's events (seq, event) now: judges a refused hand-back
        self._recheck = recheck  # judges a refused WORK_STARTED on the item's whole history (claim.py)
        self._candidates = candidates  # None: candidates are read where the trainer wrote them (one node)
        self._on_job_end = on_job_end  # (seconds, outcome): the service's job-duration metric
        self._node = node
        self._settings = settings
        self._paths = paths
        self._book = book
        self._env = dict(env)
        self._python = python
        self.slots = slots
        self._slots = asyncio.Semaphore(slots)
        self._running_pgids = running_pgids
        self._stopping = stopping

    async def accept(self, attempt: Attempt) -> None:
        """Record an attempt as held before anything else happens to it."""
        a = attempt.assignment
        await self._book.put(JobRecord(work_id=a.work_id, attempt=a.attempt, node=self._node, work_type=attempt.item.work_type))

    async def run(self, attempt: Attempt) -> None:
        """Run an accepted attempt to its end and publish that end.

        With tracing on, the job is one span continuing the item's trace, so everything published
        for it (started, progress, completed and the domain events) joins that trace.
        """
        with tracing.continued(attempt.assignment.trace or attempt.item.trace, f"job {attempt.item.work_type}"):
            async with self._slots:
                events = await self._run_in_slot(attempt)
            await self.finish(attempt.key, events, known_seq=attempt.item_seq)

    async def _run_in_slot(self, attempt: Attempt) -> list[Event]:
        key = attempt.key
        if attempt.stop_reason is not None:
            end = handed_back if attempt.hand_back else attempt_failed
            return [end(key, self._node, attempt.stop_reason)]
        refusal = await self._runaway_refusal()
        if refusal is not None:
            return [attempt_failed(key, self._node, refusal)]
        paths = outputs.attempt_paths(self._paths.worker_dir, key.work_id, key.attempt)
        try:
            argv = await self._command(attempt, paths.output_dir)
        except (TemplateError, CandidateUnavailable, InputsUnavailable) as exc:
            return [attempt_failed(key, self._node, str(exc))]
        job = Job(argv, env=self._job_env(key), cwd=paths.root, log_path=paths.log_path,
                  limits=self._limits(attempt.item.work_type), on_progress=attempt.on_progress)
        try:
            await asyncio.to_thread(paths.output_dir.mkdir, parents=True, exist_ok=True)
            pid = await job.start()
        except OSError as exc:
            return [attempt_failed(key, self._node, f"cannot start {argv[0]}: {exc.strerror or exc}")]
        attempt.job = job
        if attempt.stop_reason is not None:
            job.request_stop(attempt.stop_reason, attempt.stop_grace_s)
        try:
            unclaimed = await self._started(attempt, job, pid)
        except OSError as exc:  # its record cannot be written (a full disk): the job is not left running unrecorded
            processes.signal_group(job.pgid, signal.SIGKILL)
            return [attempt_failed(key, self._node, cannot_write(exc))]
        if unclaimed is not None:
            return await self._abandon(attempt, job, unclaimed)
        try:
            async with asyncio.TaskGroup() as tasks:
                progress = tasks.create_task(self._publish_progress(attempt))
                outcome = await job.run()
                progress.cancel()
        except BaseException:
            processes.signal_group(job.pgid, signal.SIGKILL)  # never a job left running unwatched; its record stays
            raise
        if self._on_job_end is not None:
            self._on_job_end(outcome.duration_s, "completed" if outcome.succeeded else "stopped" if outcome.stop_reason else "failed")
        found = await asyncio.to_thread(outputs.collect_outputs, paths.output_dir, result_paths(outcome.result), self._node)
        log.info("worker: %s attempt %d ended: %s", key.work_id, key.attempt,
                 outcome.stop_reason or f"exit {outcome.exit_code} in {outcome.duration_s:.1f}s")
        return outcome_events(attempt.item, key, self._node, outcome, found, attempt.best_model, attempt.hand_back)

    async def _runaway_refusal(self) -> str | None:
        count = await asyncio.to_thread(processes.count_in_groups, self._running_pgids())
        cap = self._settings.max_processes
        if count < cap:
            return None
        return (f"refused: this node's jobs run {count} processes, at or over worker.max_processes={cap} "
                "(runaway cap); no new job starts until they drop below it")

    async def _command(self, attempt: Attempt, output_dir: Path) -> list[str]:
        item, key = attempt.item, attempt.key
        template = self._settings.template_for(item.work_type)
        if template is None:
            raise TemplateError(f"worker.templates.{item.work_type}: no command template for work type {item.work_type!r}")
        model = await asyncio.to_thread(outputs.best_model, self._paths.models_dir, item.board_type, item.num_players)
        if self._paths.received_dir is not None and item.input_batch_ids():
            item = await self._local_batches(item, self._paths.received_dir)
        ref = candidate_ref(item)
        if ref is not None and self._candidates is not None:
            item = with_candidate(item, await self._candidates.local(ref))
        attempt.uses_gpu = item.work_type == "training" or model is not None
        attempt.best_model = model
        values = WorkerValues(python=self._python, output_dir=str(output_dir.absolute()),
                              model_path=str(model.path) if model else "none",
                              best_model_id=model.model_id if model else "none", work_id=key.work_id,
                              attempt=key.attempt, node=self._node)
        return expand(item.work_type, template, template_values(item, values))

    async def _local_batches(self, item: WorkAdded, received_dir: Path) -> WorkAdded:
        """The item reading only batches on this node, waiting up to `worker.data_wait_s` for the sync to copy the rest."""
        deadline = time.monotonic() + self._settings.data_wait_s
        tries = 0
        while True:
            local = await asyncio.to_thread(with_local_batches, item, received_dir)
            missing = missing_batches(local)
            if not missing:
                return local
            if time.monotonic() >= deadline or self._stopping.is_set():
                raise InputsUnavailable(
                    f"{len(missing)} input batch(es) not on this node after {self._settings.data_wait_s:.0f}s "
                    f"(worker.data_wait_s), neither where they were written nor copied by the sync: {', '.join(missing[:5])}")
            if tries == 0:
                log.info("worker: %s waits for %d batch(es) the sync has not copied here yet", item.work_id, len(missing))
            await asyncio.sleep(DATA_POLL_S[min(tries, len(DATA_POLL_S) - 1)])
            tries += 1

    def _job_env(self, key: AttemptKey) -> dict[str, str]:
        return {**self._env, "RR_WORK_ID": key.work_id, "RR_ATTEMPT": str(key.attempt), "RR_NODE": self._node}

    def _limits(self, work_type: str) -> JobLimits:
        s = self._settings
        return JobLimits(timeout_s=s.timeout_for(work_type), grace_s=s.grace_s, stuck_after_s=s.stuck_after_s,
                         stderr_tail_bytes=s.stderr_tail_bytes, watch_interval_s=s.watch_interval_s)

    async def _started(self, attempt: Attempt, job: Job, pid: int) -> Unclaimed | None:
        """Record the running job, then claim the attempt with its fenced WORK_STARTED; why not, if it may not run."""
        a, item = attempt.assignment, attempt.item
        started = utcnow()
        record = JobRecord(work_id=a.work_id, attempt=a.attempt, node=self._node, work_type=item.work_type,
                           pid=pid, create_time=job.create_time, started=started)
        await self._book.put(record)
        log.info("worker: started %s attempt %d as pid %d: %s", a.work_id, a.attempt, pid, " ".join(job.argv))
        claim = self._publisher.stamp(WorkStarted(work_id=a.work_id, node=self._node, attempt=a.attempt, pid=pid))
        assert isinstance(claim, WorkStarted)
        try:
            claimed = await claim_start(self._publisher, claim, a, attempt.assigned_seq, self._recheck)
        except BusError as exc:  # the job runs on; its end is recorded and published later (unfenced)
            log.warning("worker: WORK_STARTED of %s attempt %d not published: %s", a.work_id, a.attempt, exc)
            return None
        if isinstance(claimed, Unclaimed):
            return claimed
        await self._book.put(msgspec.structs.replace(record, started_seq=claimed))
        attempt.item_seq = max(attempt.item_seq, claimed)
        if item.work_type == "training":
            await self._training_started(item)
        return None

    async def _training_started(self, item: WorkAdded) -> None:
        event = training_started(item, self._node)
        try:
            await self._publisher.publish(event)
        except BusError as exc:  # a progress report of the training, not part of the attempt's fence
            log.warning("worker: TRAINING_STARTED of %s not published: %s", item.work_id, exc)

    async def _abandon(self, attempt: Attempt, job: Job, unclaimed: Unclaimed) -> list[Event]:
        """Stop a job whose attempt may not run: it ran milliseconds, and for the log it never started."""
        key = attempt.key
        log.warning("worker: %s attempt %d not started, its job (pid %d) stopped: %s",
                    key.work_id, key.attempt, job.pid, unclaimed.reason)
        job.request_stop(f"not started: {unclaimed.reason}", grace_s=0.0)
        await job.run()
        return [handed_back(key, self._node, unclaimed.reason)] if unclaimed.hand_back else []

    async def _publish_progress(self, attempt: Attempt) -> None:
        # The first progress goes out at once, then at most one per interval: always the latest.
        key = attempt.key
        while True:
            await attempt.progress_changed.wait()
            attempt.progress_changed.clear()
            fraction, message = attempt.progress
            try:
                published = await self._publisher.publish(WorkProgress(
                    work_id=key.work_id, node=self._node, attempt=key.attempt, fraction=fraction, message=message[:200]))
                attempt.item_seq = max(attempt.item_seq, published.seq)
            except Exception as exc:  # noqa: BLE001 - progress is best effort; it must never end the job
                log.warning("worker: progress of %s not published: %s", key.work_id, exc)
            raise_if_cancelled()  # the job's end, lost by the publish's wait_for (Python 3.11): no progress comes after it
            await asyncio.sleep(self._settings.progress_interval_s)

    async def finish(self, key: AttemptKey, events: list[Event], known_seq: int = 0) -> None:
        """Record an attempt's end events, publish them (retrying while the worker runs), then forget the attempt.

        `known_seq`: the newest event of the item this worker knows of, which fences a hand-back.
        """
        stamped = [self._publisher.stamp(e) for e in events]
        record = self._book.get(key) or JobRecord(work_id=key.work_id, attempt=key.attempt, node=self._node)
        try:
            await self._book.put(msgspec.structs.replace(record, pending=stamped))
        except OSError as exc:  # a full disk must not keep the end unreported: publish it anyway
            log.warning("worker: %s attempt %d: end not recorded on disk (%s); publishing it", key.work_id, key.attempt, exc)
        fence = started_fence(key.work_id, record.started_seq) if record.started_seq else None
        refenced = None
        known = max(known_seq, record.started_seq)
        if self._history is not None and known and all(isinstance(e, WorkHandedBack) for e in stamped):
            # A hand-back races the leader's for a node whose agent said goodbye first: stored only
            # while the item has nothing newer than what this worker saw, else judged on the log.
            fence = assignment_fence(key.work_id, known)
            refenced = self._hand_back_refenced(key, self._history)
        if await self.publish_until_done(stamped, f"{key.work_id} attempt {key.attempt}", fence, refenced):
            try:
                await self._book.remove(key)
            except OSError as exc:  # the stale record is reconciled with the log at the next start
                log.warning("worker: %s attempt %d: record not removed (%s)", key.work_id, key.attempt, exc)

    def _hand_back_refenced(self, key: AttemptKey, history: ItemHistory) -> Refenced:
        """The judge of a refused hand-back: the fence to try again with, or None to drop it (protocol.recheck_hand_back)."""
        tries = 0

        async def refenced() -> FenceToken | None:
            nonlocal tries
            tries += 1
            if tries > HAND_BACK_TRIES:  # only reports of its own came in between, again and again: cannot happen
                log.warning("worker: hand-back of %s attempt %d refused %d times; dropped", key.work_id, key.attempt, tries)
                return None
            verdict = recheck_hand_back(key, self._node, await history(key.work_id))
            if isinstance(verdict, Ignore):
                log.warning("worker: hand-back of %s attempt %d not stored: %s", key.work_id, key.attempt, verdict.reason)
                return None
            return assignment_fence(key.work_id, verdict.seq)

        return refenced

    async def publish_until_done(self, events: list[Event], what: str, fence: FenceToken | None = None,
                                 refenced: Refenced | None = None) -> bool:
        """Publish until acknowledged, or refused by the fence; False if the worker stops first (the record keeps them
        for the next start). `refenced`, asked after a refusal, gives the fence to try again with (None: drop them).

        Fenced, the events go one at a time, each stored only while the attempt is its item's newest started
        (protocol.started_fence); a refusal means a newer attempt started while this one ran (the worker was
        cut off, or its attempt handed back): its end must not count, and is dropped.
        """
        retry = 0
        while True:
            try:
                if fence is None:
                    await self._publisher.publish_many(events)
                else:
                    for event in events:  # a retry resends the stored ones with their ids: deduplicated
                        await self._publisher.publish(event, fence=fence)
                return True
            except Fenced:
                if refenced is None:
                    log.warning("worker: end of %s not stored: a newer attempt of the item started meanwhile", what)
                    return True
                try:
                    fence = await refenced()
                except BusError as exc:  # the log cannot be read now: refused again next time, and judged then
                    log.warning("worker: end of %s refused; its item cannot be read (%s)", what, exc)
                else:
                    if fence is None:
                        return True
                    continue
            except BusError as exc:
                log.warning("worker: end of %s not published yet (%s); retrying", what, exc)
            delay = PUBLISH_RETRY_S[min(retry, len(PUBLISH_RETRY_S) - 1)]
            retry += 1
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
                return False
            except TimeoutError:
                pass



def result_paths(result: object) -> list[Path]:
    """The file a result line names (`path`), which may lie outside the output dir."""
    path = result.get("path") if isinstance(result, dict) else None
    return [Path(path)] if isinstance(path, str) and path else []


def with_local_batches(item: WorkAdded, received_dir: Path) -> WorkAdded:
    """The item with each input path that is not on this node replaced by the sync service's copy, where there is one (blocking).

    A training item names its batches as the nodes that wrote them reported them; on a fleet the
    data sync copied them to this node under another path. A batch found nowhere keeps its path
    (`missing_batches` names it; the runner waits for the sync before starting the job). The
    result carries `inputs` even for an item that named its batches in params (one added before
    `inputs` existed); the template reads them from there.
    """
    inputs = item.training_inputs()
    if not all(i.batch_id for i in inputs):
        return item  # paths without ids: nothing to find the sync's copies by
    local = [i if Path(i.path).exists() else _received_or(i, received_dir, item) for i in inputs]
    return msgspec.structs.replace(item, inputs=local)


def missing_batches(item: WorkAdded) -> list[str]:
    """The input paths of an item that are not files on this node (blocking)."""
    return [i.path for i in item.training_inputs() if not Path(i.path).is_file()]


def _received_or(batch: BatchInput, received_dir: Path, item: WorkAdded) -> BatchInput:
    copy = received_path(received_dir, item.board_type, item.num_players, batch.batch_id, batch.path)
    return msgspec.structs.replace(batch, path=str(copy)) if copy.exists() else batch
