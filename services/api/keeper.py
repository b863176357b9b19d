"""The projections kept live for the API: the stored snapshot, the log's history, then the log as it grows.

Everything here runs on the event loop. HTTP threads read only `ProjectionKeeper.current`, an
immutable `Current` replaced as a whole, so a request never sees a half-applied event and never
takes a lock that the loop holds.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence

import msgspec

from eventbus.connection import Bus
from eventbus.connectivity import wait_reconnected
from eventbus.errors import BusError
from eventbus.follow import follow
from eventbus.history import Record, last_sequence, replay
from projections import bundle, workrefs
from projections.base import Folder
from projections.bundle import ProjectionSet
from servicekit.snapshotting import load_state, save_state

log = logging.getLogger(__name__)

CATCH_UP_PUBLISH_S = 0.5  # while replaying history, readers see progress at most this often
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0


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
        on_record: Callable[[Record], None] | None = None,
        candidates: Sequence[str] = (),
    ) -> None:
        self._bus = bus
        self._on_record_hook = on_record  # sees every record folded (the metrics)
        self._candidates = tuple(candidates)  # whose elections the fences believe (empty: any node's)
        self._snapshot_every = snapshot_every
        self._snapshot_pause = snapshot_min_interval_s
        self._folder: Folder[ProjectionSet] = Folder(bundle.PROJECTION, bundle.believing(ProjectionSet(), candidates))
        self._position = 0  # the last sequence folded (the folder's state catches up when read)
        self._ring: collections.deque[Record] = collections.deque(maxlen=recent)
        self._caught_up = False
        self._log_end = 0
        self._snapshot_seq = 0
        self._since_snapshot = 0
        self._snapshot_due = asyncio.Event()
        self._publish_scheduled = False
        self._published_at = 0.0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._folded = self._saved = self._save_failures = self._restarts = 0
        self.current = Current(state=ProjectionSet(), recent=(), caught_up=False, log_end_seq=0, snapshot_seq=0)

    def statistics(self) -> KeeperStats:
        """Events folded, snapshots saved and failed, and how often following the log restarted."""
        return KeeperStats(
            folded=self._folded, snapshots_saved=self._saved, snapshot_failures=self._save_failures,
            follow_restarts=self._restarts,
        )

    async def run(self) -> None:
        """Catch up with the log, then follow it until cancelled; bus errors are retried with backoff."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._save_snapshots())
            delay = RETRY_INITIAL_S
            while True:
                try:
                    if not self._caught_up:
                        await self._catch_up()
                    await self._follow_until_reconnected()
                    delay = RETRY_INITIAL_S
                except BusError as exc:
                    log.warning("api: reading the log failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                self._restarts += 1

    async def _follow_until_reconnected(self) -> None:
        # One ordered consumer from the next position: no gap, no duplicate with what was folded.
        # A restarted server may have lost it, and the client would notice only after two missed
        # heartbeats (10 s); following again from the position on every reconnect takes no longer
        # than the reconnect itself.
        try:
            async with asyncio.TaskGroup() as tasks:
                following = tasks.create_task(follow(self._bus, self._on_record, start_seq=self._position + 1))
                await wait_reconnected(self._bus)
                following.cancel()
        except ExceptionGroup as group:
            raise group.exceptions[0] from None  # follow's BusError, for run() to retry
        log.info("api: reconnected to NATS; following the log again from seq %d", self._position + 1)

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

    async def _catch_up(self) -> None:
        await self._load_snapshot()
        self._log_end = await last_sequence(self._bus)
        start = self._position + 1
        log.info("api: folding the log from seq %d to %d", start, self._log_end)
        started = time.perf_counter()
        await replay(self._bus, self._on_record, start_seq=start, end_seq=self._log_end)
        self._caught_up = True
        self._publish()
        log.info("api: caught up at seq %d in %.1fs", self._position, time.perf_counter() - started)
        if self._since_snapshot >= self._snapshot_every:
            self._snapshot_due.set()

    async def _load_snapshot(self) -> None:
        if self._position > 0:
            return  # a retried catch-up carries on from where the last attempt got to
        loaded = await load_state(self._bus, bundle.PROJECTION, "api")
        if loaded is None:
            return
        self._folder = Folder(bundle.PROJECTION, bundle.believing(loaded.state, self._candidates))
        self._position = loaded.header.last_seq
        self._snapshot_seq = loaded.header.last_seq

    def _on_record(self, record: Record) -> None:
        if record.seq <= self._position:
            return  # already folded: a restarted follow may deliver it again
        self._position = record.seq
        self._folder(record)
        if self._on_record_hook is not None:
            try:
                self._on_record_hook(record)
            except Exception as exc:  # metrics must never stop the projections
                log.warning("api: metrics could not observe seq %d: %s: %s", record.seq, type(exc).__name__, exc)
        self._ring.append(record)
        self._folded += 1
        self._since_snapshot += 1
        if self._caught_up:
            if self._since_snapshot >= self._snapshot_every:
                self._snapshot_due.set()
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
        self.current = Current(
            state=state, recent=tuple(self._ring), caught_up=self._caught_up, log_end_seq=self._log_end,
            snapshot_seq=self._snapshot_seq,
        )
        for seq, waiter in self._waiters:
            if seq <= state.last_seq and not waiter.done():
                waiter.set_result(None)

    async def _save_snapshots(self) -> None:
        # One save at a time, at most one per pause; events arriving meanwhile only mark the next one due.
        while True:
            await self._snapshot_due.wait()
            self._snapshot_due.clear()
            self._since_snapshot = 0
            state = bundle.PROJECTION.finished(self._folder.state)
            try:
                size = await save_state(self._bus, bundle.PROJECTION, state)
                # The timeline's index on its own: `rr timeline --work` loads it without the bundle.
                await save_state(self._bus, workrefs.PROJECTION, state.workrefs)
            except BusError as exc:
                self._save_failures += 1
                log.warning("api: snapshot at seq %d not saved: %s", state.last_seq, exc)
                continue
            self._saved += 1
            self._snapshot_seq = state.last_seq
            log.info("api: snapshot saved at seq %d (%d bytes)", state.last_seq, size)
            await asyncio.sleep(self._snapshot_pause)
