"""Keeping folds of the log live in a long-running process: the one follower loop every service and command uses.

A LiveFold starts each fold from its newest usable snapshot (servicekit/snapshotting.py), reads
the log's tail up to its end, then follows the log live (eventbus/follow.py) from the position
folded, so nothing is skipped and nothing folded twice. It saves the folds' snapshots on the
schedule its caller asks for, and offers the two waits the loops decide on: "the fold has
reached position S" (a decision this process published, read back) and "something the folds
read arrived". The folds stay pure; this shell is their only I/O.

The bus going away is retried with backoff and never raised to the caller: one unanswered
request must not end a leader's term. After the client reconnects, the log is followed again
from the position folded, at once rather than after the ordered consumer's missed heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec

from eventbus.connection import Bus
from eventbus.connectivity import wait_reconnected
from eventbus.errors import BusError, BusUnavailable
from eventbus.events import EVENT_TYPES
from eventbus.follow import follow
from eventbus.gcpause import without_gc
from eventbus.history import Record, last_sequence, replay
from eventbus.subjects import EVENTS_ROOT, type_filter
from eventbus.tasks import raise_if_cancelled
from projections import fence, taint
from projections.base import Folder, Projection, type_of
from projections.pmap import settle
from projections.snapshotplan import SnapshotSettings
from servicekit.snapshotting import Part, SnapshotWriter, load_states

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0


def aggregate_subjects(*aggregates: str) -> tuple[str, ...]:
    """Subject filters of whole aggregates, e.g. ('rr.evt.model.>', 'rr.evt.host.>')."""
    return tuple(f"{EVENTS_ROOT}.{a}.>" for a in aggregates)


def type_subjects(type_names: Iterable[str]) -> tuple[str, ...]:
    """Subject filters of single event types, e.g. ('rr.evt.*.*.WORK_FAILED.*',): a few types of a busy aggregate."""
    return tuple(type_filter(name) for name in sorted(type_names))


def read_subjects(aggregate: str, *projections: Projection[Any]) -> tuple[str, ...]:
    """Subject filters of the types of `aggregate` the projections read: not the whole aggregate when it is busy
    with types none of them reads (a work item's WORK_PROGRESS reports are about half of its records)."""
    return type_subjects({t for p in projections for t in p.reads if t in EVENT_TYPES and EVENT_TYPES[t].aggregate == aggregate})


def taint_subjects() -> tuple[str, ...]:
    """What the taint fold reads: the quarantines and the lineage edges (batches, trainings)."""
    return (*aggregate_subjects("quarantine"), *type_subjects(taint.LINEAGE_TYPES))


def believing_only(candidates: Sequence[str]) -> Callable[[Projection[Any], Any], Any]:
    """A `resumed` for folds whose fences believe these candidates' elections only (empty: any node's).

    A snapshot's fence carries the candidates of whoever saved it (the leader's loop); this
    process's configuration decides whom it believes, or a forged election after the snapshot
    would count on a node configured to refuse it.
    """
    def resumed(_projection: Projection[Any], state: Any) -> Any:
        return fence.believing(state, candidates) if hasattr(state, "fence") else state
    return resumed


def _settle_all(states: Sequence[Any]) -> None:
    for state in states:
        if state is not None:
            settle(state)
    _decode_lineages(states)


def _decode_lineages(states: Sequence[Any]) -> None:
    for state in states:
        lineage = state if isinstance(state, taint.TaintState) else getattr(state, "taint", None)  # a taint fold, or the bundle's part
        if isinstance(lineage, taint.TaintState):
            taint.decode_lineage(lineage)  # read by key, which `settle` leaves, but gone over whole while a quarantine is in force


class LiveStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """How a live fold is doing (the API's /health shows it)."""

    position: int  # the last sequence folded
    folded: int  # records folded by this process (a snapshot's are not counted)
    follow_restarts: int  # times following the log started again (a bus error, a reconnect)
    snapshots_saved: int
    snapshot_failures: int
    snapshot_seq: int  # position of the newest snapshot loaded or saved; 0: none


class LiveFold:
    """Several folds fed from the same records, in log order, kept live; see the module docstring."""

    def __init__(
        self, bus: Bus, folders: Sequence[Folder[Any]] = (), subjects: Sequence[str] | None = None, *,
        on_record: Callable[[Record], None] | None = None, snapshots: SnapshotSettings | None = None,
        snapshot_parts: Sequence[Part] = (), snapshot_pause_s: float = 0.0,
        after_snapshot: Callable[[Any], Awaitable[object]] | None = None,
        resumed: Callable[[Projection[Any], Any], Any] | None = None, who: str = "", replicas: int = 1,
        settle_after_catch_up: bool = False,
    ) -> None:
        """`subjects`: what the catch-up reads (None: every event, streamed); following always reads every event.

        `on_record` sees each new record after the folders (a loop's own fold, its wake-ups, metrics).
        `snapshots`: save the folders' states on that schedule while following (only a leader or the
        API may write them), at most one save per `snapshot_pause_s`; `snapshot_parts` are saved beside
        the first folder's, then `after_snapshot(state)` is awaited with its state. `resumed(projection, state)` adapts a loaded snapshot's state before
        folding on (the fence's candidates are configuration, not in the log). `settle_after_catch_up`:
        the loaded snapshots' values are decoded in a thread once `follow` starts, not before the
        catch-up (a process whose whole-map reads run off its event loop: the API's HTTP threads).
        """
        self._bus = bus
        self._who = who or "live fold"
        self._folders = list(folders)
        self._subjects = None if subjects is None else tuple(subjects)
        self._hook = on_record
        self._resumed = resumed
        self._writer = None if snapshots is None else SnapshotWriter(
            bus, self._folders, snapshots, self._who, replicas=replicas, parts=snapshot_parts, after_save=after_snapshot)
        self._pause_s = snapshot_pause_s
        # With no folder the caller folds in `on_record`: every record is news to it.
        self._reads: frozenset[str] | None = (
            frozenset().union(*(f.projection.reads for f in self._folders)) if self._folders else None)
        self._snapshot_due = asyncio.Event()
        self._changed = asyncio.Event()
        # Waiters on a position, woken only once it is reached: a read-back of a round's decisions
        # would otherwise wake for every record folded on the way.
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._soonest = math.inf  # the lowest position waited for
        self.position = 0  # the last sequence folded
        self.log_end = 0  # the log's last sequence when the catch-up started
        self.caught_up = False
        self.snapshot_seq = 0
        self._folded = 0
        self._restarts = 0
        self._settle_later = settle_after_catch_up
        self._unsettled: list[Any] = []  # loaded states whose values `follow` decodes (settle_after_catch_up)

    def statistics(self) -> LiveStatistics:
        """Position, records folded, restarts of the follower, snapshots saved and failed."""
        writer = self._writer
        return LiveStatistics(
            position=self.position, folded=self._folded, follow_restarts=self._restarts,
            snapshots_saved=writer.saved if writer else 0, snapshot_failures=writer.failed if writer else 0,
            snapshot_seq=max(self.snapshot_seq, writer.saved_seq if writer else 0),
        )

    async def start(self) -> int:
        """Catch up with the log, retrying with backoff while the bus is unavailable; returns the position."""
        delay = RETRY_INITIAL_S
        while True:
            try:
                return await self.catch_up()
            except (BusError, TimeoutError) as exc:
                log.warning("%s: reading the log failed (%s); retrying in %.1fs", self._who, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def catch_up(self) -> int:
        """Fold from each fold's newest snapshot to the log's end now, once (raises BusError); returns that position."""
        end = await last_sequence(self._bus)
        self.log_end = end
        start = max(self.position, await self._start_from_snapshots(end))
        started = time.perf_counter()
        if self._subjects is None:
            await replay(self._bus, self.feed, start_seq=start + 1, end_seq=end)
        else:
            # One ordered read per subject, merged by sequence: a fold never sees an older record after a newer one.
            records: list[Record] = []
            for subject in self._subjects:
                await replay(self._bus, records.append, subject=subject, start_seq=start + 1, end_seq=end)
            records.sort(key=lambda r: r.seq)
            for record in records:
                self.feed(record)
        self._moved_to(max(self.position, end))
        self.caught_up = True
        self._changed.set()
        log.debug("%s: caught up at seq %d in %.1fs", self._who, end, time.perf_counter() - started)
        return end

    async def _start_from_snapshots(self, end: int) -> int:
        # Each fold not yet started resumes from its own newest snapshot; the read starts after the oldest of them.
        if not self._folders:
            return 0
        starting = [f for f in self._folders if f.state.last_seq == 0 and self.position == 0]
        for folder, loaded in zip(starting, await self._load([f.projection for f in starting], end), strict=True):
            if loaded is not None:
                state = loaded if self._resumed is None else self._resumed(folder.projection, loaded)
                folder.start_from(state)
                self.snapshot_seq = max(self.snapshot_seq, state.last_seq)
        return min(int(f.state.last_seq) for f in self._folders)

    async def _load(self, projections: list[Projection[Any]], end: int) -> list[Any]:
        # All together: one listing of the bucket, and the bundle loaded once however many of them are its parts.
        if not projections:
            return []
        try:
            loaded = await load_states(self._bus, projections, self._who, not_after_seq=end)
        except BusUnavailable:
            raise  # the log would not be readable either: retried as a whole
        except BusError as exc:  # no usable snapshot: fold from sequence 1, as correct, only slower
            log.warning("%s: no snapshots of %s (%s); folding the log from seq 1", self._who,
                        ", ".join(p.name for p in projections), exc)
            return [None] * len(projections)
        states = [None if one is None else one.state for one in loaded]
        if self._settle_later:  # decoded after the catch-up, in `follow`: the tail's fold reads by key
            self._unsettled = [state for state in states if state is not None]
            await asyncio.to_thread(without_gc, _decode_lineages, states)
            return states
        # Values a snapshot left undecoded would be decoded by this service's first pass over a
        # whole map, on the event loop: decoded here, in a thread, as the snapshot itself was.
        await asyncio.to_thread(without_gc, _settle_all, states)
        return states

    async def _settle_loaded(self) -> None:
        # The maps of the states folded since share the loaded ones' bases: settling these decodes theirs.
        states, self._unsettled = self._unsettled, []
        await asyncio.to_thread(without_gc, _settle_all, states)

    async def follow(self) -> None:
        """Fold every new record until cancelled (after `catch_up`), saving snapshots when due if asked to."""
        async with asyncio.TaskGroup() as tasks:
            if self._writer is not None:
                tasks.create_task(self._save_snapshots(self._writer))
            if self._unsettled:
                tasks.create_task(self._settle_loaded())
            delay = RETRY_INITIAL_S
            while True:
                try:
                    await self._follow_until_reconnected()
                    delay = RETRY_INITIAL_S
                except (BusError, TimeoutError) as exc:  # resume after what was folded: nothing skipped, nothing twice
                    log.warning("%s: following the log failed (%s); resuming in %.1fs", self._who, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                self._restarts += 1

    async def _follow_until_reconnected(self) -> None:
        # A restarted server may have lost the ordered consumer, and the client would notice only
        # after two missed heartbeats (10 s); following again on every reconnect is no slower than it.
        try:
            async with asyncio.TaskGroup() as tasks:
                following = tasks.create_task(follow(self._bus, self.feed, start_seq=self.position + 1))
                await wait_reconnected(self._bus)
                following.cancel()
        except ExceptionGroup as group:
            raise group.exceptions[0] from None  # follow's BusError, for follow() to retry
        log.info("%s: reconnected to NATS; following the log again from seq %d", self._who, self.position + 1)

    async def _save_snapshots(self, writer: SnapshotWriter) -> None:
        # Woken when enough records were folded, or every_s at the latest for the time-based rule.
        every_s = writer.settings.every_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s if math.isfinite(every_s) else None):
                    await self._snapshot_due.wait()
            self._snapshot_due.clear()
            saved = await writer.save_if_due()
            raise_if_cancelled()  # a stop that the save's puts lost (Python 3.11's wait_for): none may come due again
            if saved and self._pause_s:
                await asyncio.sleep(self._pause_s)

    def feed(self, record: Record) -> None:
        """Fold one record into every fold (history, then live); one already folded is ignored."""
        seq = record.seq
        if seq <= self.position:
            return  # already folded: a restarted follow may deliver it again
        for folder in self._folders:
            folder(record)
        if self._hook is not None:
            self._hook(record)
        self._folded += 1
        if self._writer is not None and self._writer.folded():
            self._snapshot_due.set()
        # Once set, nobody has waited since: the subject need not be read again (this runs for every record).
        if not self._changed.is_set() and (self._reads is None or type_of(record.subject) in self._reads):
            self._changed.set()
        self.position = seq
        if seq >= self._soonest:
            self._release()

    def _moved_to(self, seq: int) -> None:
        self.position = seq
        self._release()

    def _release(self) -> None:
        still = []
        for seq, waiter in self._waiters:
            if seq <= self.position:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((seq, waiter))
        self._waiters = still
        self._soonest = min((seq for seq, _ in still), default=math.inf)

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
        """Wait until the folds have seen sequence `seq` (e.g. an event this process published); False on timeout."""
        if self.position >= seq:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, waiter))
        self._soonest = min(self._soonest, seq)
        try:
            # asyncio.timeout, not wait_for (see wait_changed).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await waiter
        finally:
            waiter.cancel()  # no-op once resolved; a timed-out or cancelled wait leaves nothing behind
            self._waiters = [(at, other) for at, other in self._waiters if other is not waiter]
            self._soonest = min((at for at, _ in self._waiters), default=math.inf)
        return self.position >= seq


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
