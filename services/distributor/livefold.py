"""Keeping folds of the log current in a long-running process: catch up from the log, then follow it live.

The catch-up reads only the aggregates the folds need (one ordered read per subject, merged
by sequence), so a node starting after a year does not decode every work event; from then on
one ordered consumer on every event feeds the folds in log order (a fold must never see an
older record after a newer one: Folder skips it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from eventbus.connection import Bus
from eventbus.errors import BusError
from eventbus.follow import follow
from eventbus.history import Record, last_sequence, replay
from eventbus.subjects import ALL_EVENTS, EVENTS_ROOT, type_filter
from projections import taint
from projections.base import Folder, type_of
from projections.snapshotplan import SnapshotSettings
from servicekit.snapshotting import SnapshotWriter, load_state

log = logging.getLogger(__name__)


def aggregate_subjects(*aggregates: str) -> tuple[str, ...]:
    """Subject filters of whole aggregates, e.g. ('rr.evt.model.>', 'rr.evt.host.>')."""
    return tuple(f"{EVENTS_ROOT}.{a}.>" for a in aggregates)


def type_subjects(type_names: Iterable[str]) -> tuple[str, ...]:
    """Subject filters of single event types, e.g. ('rr.evt.*.*.WORK_FAILED.*',): a few types of a busy aggregate."""
    return tuple(type_filter(name) for name in sorted(type_names))


def taint_subjects() -> tuple[str, ...]:
    """What the taint fold reads: the quarantines and the lineage edges (batches, trainings)."""
    return (*aggregate_subjects("quarantine"), *type_subjects(taint.LINEAGE_TYPES))


class LiveFold:
    """Several folds fed from the same records; `changed` wakes whoever waits on news they read."""

    def __init__(self, bus: Bus, folders: Sequence[Folder[Any]], subjects: Sequence[str], *,
                 snapshots: SnapshotSettings | None = None, who: str = "", replicas: int = 1) -> None:
        """`snapshots`: save the folds' states on that schedule while following (only the leader may write them)."""
        self._bus = bus
        self._who = who or "live fold"
        self._writer = None if snapshots is None else SnapshotWriter(bus, folders, snapshots, self._who, replicas=replicas)
        self._snapshot_due = asyncio.Event()
        self._folders = list(folders)
        self._subjects = tuple(subjects)
        self._reads = frozenset().union(*(f.projection.reads for f in self._folders))
        self._changed = asyncio.Event()
        self._moved = asyncio.Event()
        self.position = 0  # the last sequence folded

    async def catch_up(self) -> int:
        """Fold the needed aggregates from each fold's newest snapshot to the log's end now; returns that position."""
        end = await last_sequence(self._bus)
        start = await self._start_from_snapshots(end)
        records: list[Record] = []
        for subject in self._subjects:
            await replay(self._bus, records.append, subject=subject, start_seq=start + 1, end_seq=end)
        records.sort(key=lambda r: r.seq)
        for record in records:
            self._feed(record)
        self.position = max(self.position, end)
        self._changed.set()
        return end

    async def _start_from_snapshots(self, end: int) -> int:
        # Each fold not yet started resumes from its own newest snapshot; the read starts after the oldest of them.
        for folder in self._folders:
            if folder.state.last_seq == 0:
                loaded = await load_state(self._bus, folder.projection, self._who, not_after_seq=end)
                if loaded is not None:
                    folder.start_from(loaded.state)
        return min((f.state.last_seq for f in self._folders), default=0)

    async def follow(self) -> None:
        """Fold every new record until cancelled (after `catch_up`), saving snapshots when due if asked to."""
        if self._writer is None:
            await follow(self._bus, self._on_record, subject=ALL_EVENTS, start_seq=self.position + 1)
            return
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._save_snapshots(self._writer))
            await follow(self._bus, self._on_record, subject=ALL_EVENTS, start_seq=self.position + 1)

    async def _save_snapshots(self, writer: SnapshotWriter) -> None:
        # Woken when enough records were folded, or every_s at the latest for the time-based rule.
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(writer.settings.every_s):
                    await self._snapshot_due.wait()
            self._snapshot_due.clear()
            await writer.save_if_due()

    def _feed(self, record: Record) -> None:
        for folder in self._folders:
            folder(record)
        if self._writer is not None:
            self._writer.folded()
            if self._writer.is_due():
                self._snapshot_due.set()
        if type_of(record.subject) in self._reads:
            self._changed.set()

    def _on_record(self, record: Record) -> None:
        if record.seq <= self.position:
            return
        self._feed(record)
        self.position = record.seq
        self._moved.set()

    async def wait_changed(self, timeout: float) -> bool:
        """Wait until a record the folds read arrives (or arrived since the last call); False on timeout."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the loop waiting here would then never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        changed = self._changed.is_set()
        self._changed.clear()
        return changed

    async def wait_position(self, seq: int, timeout: float) -> bool:
        """Wait until the folds have seen sequence `seq` (e.g. an event this process published)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.position < seq:
            self._moved.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._moved.wait()
        return True


async def reconcile_while_following(
    live: LiveFold, stopping: asyncio.Event, ready: asyncio.Event, who: str,
    reconcile: Callable[[asyncio.Event], Awaitable[None]], pause: Callable[[asyncio.Event], Awaitable[None]],
) -> None:
    """Follow the log into `live` and run `reconcile` after every `pause`, until `stopping` (the agents' main loop).

    A pass that fails on the bus or the disk is logged and tried again on the next one: a node
    agent outlives outages rather than crash-looping through them.
    """
    async with asyncio.TaskGroup() as tasks:
        follower = tasks.create_task(live.follow())
        try:
            while not stopping.is_set():
                try:
                    await reconcile(stopping)
                except (BusError, OSError) as exc:
                    log.warning("%s: pass failed, trying again: %s", who, exc)
                ready.set()
                await pause(stopping)
        finally:
            follower.cancel()
