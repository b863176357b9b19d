"""The projections kept live for the API: the stored snapshot, the log's history, then the log as it grows.

Everything here runs on the event loop. HTTP threads read only `ProjectionKeeper.current`, an
immutable `Current` replaced as a whole, so a request never sees a half-applied event and never
takes a lock that the loop holds.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Sequence

import msgspec

from eventbus.connection import Bus
from eventbus.errors import BusError
from eventbus.history import Record
from eventbus.tasks import raise_if_cancelled
from projections import bundle, timelinestart, workrefs
from projections.base import Folder
from projections.bundle import ProjectionSet
from projections.snapshotplan import SnapshotSettings
from servicekit.livefold import LiveFold
from servicekit.workrefentries import EntryWriter

log = logging.getLogger(__name__)

CATCH_UP_PUBLISH_S = 0.5  # while replaying history, readers see progress at most this often
# Records between writes of the timeline's index entries beyond the snapshot saves: a timeline
# reads the results past the last (~7% of the records), a write costs ~2 KV operations per item
# changed since the one before (a few dozen) plus the position's two.
REFS_EVERY_EVENTS = 500


class Current(msgspec.Struct, frozen=True, kw_only=True):
    """What HTTP threads read: every projection at one position, and the newest records."""

    state: ProjectionSet
    recent: tuple[Record, ...]  # oldest first
    caught_up: bool  # False while the history that existed at start is still being folded
    log_end_seq: int  # the log's last sequence when the catch-up started
    snapshot_seq: int  # position of the newest snapshot loaded or saved; 0: none


class KeeperStats(msgspec.Struct, frozen=True, kw_only=True):
    """How the keeper is doing, for /health."""

    folded: int
    snapshots_saved: int
    snapshot_failures: int
    follow_restarts: int


class ProjectionKeeper:
    """Folds every event of the log into a ProjectionSet and publishes it for readers in other threads."""

    def __init__(
        self, bus: Bus, *, snapshot_every: int, recent: int, snapshot_min_interval_s: float = 0.0,
        snapshot_max_gib: float = SnapshotSettings().max_gib, snapshot_config: SnapshotSettings = SnapshotSettings(),
        on_record: Callable[[Record], None] | None = None,
        candidates: Sequence[str] = (),
    ) -> None:
        self._on_record_hook = on_record  # sees every record folded (the metrics)
        candidates = tuple(candidates)  # whose elections the fences believe (empty: any node's)
        self._folder: Folder[ProjectionSet] = Folder(bundle.PROJECTION, bundle.believing(ProjectionSet(), candidates))
        # Saved on records alone (no time rule), beside the services' parts and the timeline's index, at most one per pause.
        snapshots = msgspec.structs.replace(snapshot_config, every_events=max(snapshot_every, 1), every_s=math.inf,
                                            max_gib=snapshot_max_gib)  # the delta settings from `snapshots:`
        # The timeline's index also one entry per work item, written after each save (a lookup reads one).
        self._refs = EntryWriter(bus)

        def resumed(_projection: object, state: ProjectionSet) -> ProjectionSet:
            self._refs.resumed(state.workrefs)
            return bundle.believing(state, candidates)

        async def write_refs(state: ProjectionSet) -> None:
            await self._refs.write(state.workrefs)

        self._refs_at = 0  # the last record the entries were asked written at between snapshots
        self._refs_due = asyncio.Event()

        self._live = LiveFold(
            bus, [self._folder], on_record=self._on_record, snapshots=snapshots,
            snapshot_parts=[*bundle.saved_parts(), (workrefs.PROJECTION, lambda state: state.workrefs),
                            (timelinestart.PROJECTION, lambda state: state.cluster)],
            snapshot_pause_s=snapshot_min_interval_s, after_snapshot=write_refs, resumed=resumed, who="api",
            settle_after_catch_up=True,  # its whole-map reads run in the HTTP threads: serving need not wait for them
        )
        self._ring: collections.deque[Record] = collections.deque(maxlen=recent)
        self._publish_scheduled = False
        self._published_at = 0.0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.current = Current(state=ProjectionSet(), recent=(), caught_up=False, log_end_seq=0, snapshot_seq=0)

    def statistics(self) -> KeeperStats:
        """Events folded, snapshots saved and failed, and how often following the log restarted."""
        live = self._live.statistics()
        return KeeperStats(
            folded=live.folded, snapshots_saved=live.snapshots_saved, snapshot_failures=live.snapshot_failures,
            follow_restarts=live.follow_restarts,
        )

    async def run(self) -> None:
        """Catch up with the log, then follow it until cancelled; bus errors are retried with backoff."""
        started = time.perf_counter()
        await self._live.start()
        self._publish()
        log.info("api: caught up at seq %d in %.1fs", self._live.position, time.perf_counter() - started)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._live.follow())
            tasks.create_task(self._write_refs_between_snapshots())

    async def _write_refs_between_snapshots(self) -> None:
        """The timeline's index entries and position every `REFS_EVERY_EVENTS` records, not only at snapshot saves.

        A `rr timeline --work` folds the results after the position: a snapshot interval's (10k
        records, most of its reads) when written at saves only, a few hundred this way. Each write
        sends the few items changed since the last and names the kept snapshots as last listed.
        """
        while True:
            await self._refs_due.wait()
            self._refs_due.clear()
            state = self._folder.state.workrefs
            self._refs_at = state.last_seq
            try:
                await self._refs.write(state, relist=False)
            except BusError as exc:  # the next due write (or snapshot save) tries again
                log.warning("api: the timeline's index entries not written at seq %d: %s", state.last_seq, exc)
            raise_if_cancelled()  # a stop that the write's puts lost (Python 3.11's wait_for): the next may be 500 records away

    async def wait_folded(self, seq: int, timeout: float) -> bool:
        """Wait until readers see the log at `seq` or later; False when `timeout` passed first."""
        if self.current.state.last_seq >= seq:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters = [(s, w) for s, w in self._waiters if w is not waiter]

    def _on_record(self, record: Record) -> None:
        if self._on_record_hook is not None:
            try:
                self._on_record_hook(record)
            except Exception as exc:  # metrics must never stop the projections
                log.warning("api: metrics could not observe seq %d: %s: %s", record.seq, type(exc).__name__, exc)
        self._ring.append(record)
        if self._live.caught_up and record.seq - self._refs_at >= REFS_EVERY_EVENTS:
            self._refs_due.set()
        if self._live.caught_up:
            if not self._publish_scheduled:
                # Coalesced: a burst of records costs one publish, after the burst's callbacks ran.
                self._publish_scheduled = True
                asyncio.get_running_loop().call_soon(self._publish)
        elif time.monotonic() - self._published_at >= CATCH_UP_PUBLISH_S:
            self._publish()

    def _publish(self) -> None:
        self._publish_scheduled = False
        self._published_at = time.monotonic()
        state = bundle.PROJECTION.finished(self._folder.state)
        live = self._live.statistics()
        self.current = Current(
            state=state, recent=tuple(self._ring), caught_up=self._live.caught_up, log_end_seq=self._live.log_end,
            snapshot_seq=live.snapshot_seq,
        )
        for waiting, waiter in self._waiters:
            if waiting <= state.last_seq and not waiter.done():
                waiter.set_result(None)
