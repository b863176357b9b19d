"""The worker's own record of the jobs it holds, in a small JSON file, so a restart never orphans one.

Each accepted attempt is written before it starts (pid None while it waits for a slot), again
once its process runs (pid, process group, start time), and again with its end events, stamped,
before they are published; it is removed once they are acknowledged. A worker that starts and
finds records left behind hands them to services/worker/recovery.py. The agent's running-jobs
file (membership.jobs_file) is written from the same table, for the heartbeats.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from pathlib import Path

import msgspec

from eventbus.events import AnyEvent
from eventbus.heartbeats import RunningJob
from servicekit.jobsfile import write_running_jobs
from services.worker.protocol import AttemptKey

log = logging.getLogger(__name__)


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt this worker holds: where its process is, and the end events it still has to publish."""

    work_id: str
    attempt: int
    node: str
    work_type: str = ""
    pid: int | None = None  # None while it waits for a slot
    create_time: float | None = None  # the process's start time (psutil), to tell it from a reused pid
    started: dt.datetime | None = None
    pending: list[AnyEvent] = []  # stamped end events not yet acknowledged by the stream
    started_seq: int = 0  # stream sequence of its WORK_STARTED (0: not published): the fence of its end events

    @property
    def key(self) -> AttemptKey:
        """Which attempt this is."""
        return AttemptKey(self.work_id, self.attempt)

    @property
    def pgid(self) -> int | None:
        """The job's process group (it runs in its own session)."""
        return self.pid


_decoder = msgspec.json.Decoder(list[JobRecord])


def read_records(path: Path) -> list[JobRecord]:
    """The records a previous worker process left; [] when there are none (blocking)."""
    try:
        return _decoder.decode(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, msgspec.DecodeError) as exc:
        # A record file that cannot be read loses track of jobs: say so loudly, start afresh.
        log.error("worker records %s unreadable (%s): jobs it listed cannot be recovered", path, exc)
        return []


def write_records(path: Path, records: list[JobRecord]) -> None:
    """Replace the file atomically: temp file, then rename (blocking).

    No fsync: the file guards against the worker process dying, which the page cache survives;
    a power loss takes the jobs down with it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.encode(records))
    os.replace(tmp, path)


def running_jobs(records: list[JobRecord]) -> list[RunningJob]:
    """The records as the agent reports them in heartbeats (running ones only)."""
    return [RunningJob(work_id=r.work_id, attempt=r.attempt, work_type=r.work_type, pid=r.pid, started=r.started)
            for r in records if r.pid is not None and not r.pending]


class RecordBook:
    """The in-memory table of records, written through to the file after every change, in order."""

    def __init__(self, path: Path, jobs_file: str | None) -> None:
        self.path = path
        self._jobs_file = jobs_file
        self._records: dict[AttemptKey, JobRecord] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> list[JobRecord]:
        """The records left by a previous process; they stay in the table until `remove`d."""
        records = await asyncio.to_thread(read_records, self.path)
        self._records = {r.key: r for r in records}
        return records

    def keys(self) -> list[AttemptKey]:
        """Every attempt held, running or left behind."""
        return list(self._records)

    def get(self, key: AttemptKey) -> JobRecord | None:
        """The record of an attempt, if held."""
        return self._records.get(key)

    async def put(self, record: JobRecord) -> None:
        """Add or replace a record, durably."""
        self._records[record.key] = record
        await self._flush()

    async def remove(self, key: AttemptKey) -> None:
        """Forget an attempt whose end is published, durably."""
        if self._records.pop(key, None) is not None:
            await self._flush()

    async def _flush(self) -> None:
        # One writer at a time, each writing the table as it is when its turn comes: the file
        # never goes back to an older state.
        async with self._lock:
            records = list(self._records.values())
            await asyncio.to_thread(self._write, records)

    def _write(self, records: list[JobRecord]) -> None:
        write_records(self.path, records)
        if self._jobs_file:
            write_running_jobs(self._jobs_file, running_jobs(records))
