"""The imperative shell around the folds: load a snapshot, fold the log's tail, rebuild at a sequence or a time.

Everything here goes through eventbus APIs (history.replay, snapshots); the folds stay pure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

import msgspec

from eventbus.connection import Bus
from eventbus.events import utcnow
from eventbus.history import Record, first_stored_at, last_sequence, replay
from eventbus.snapshots import kept_index, kept_objects, load_snapshot
from projections import bundle, fence
from projections.base import Folder, Projection, UntilFolder
from projections.snapshot import SnapshotHeader, decode_snapshot, encode_snapshot, read_header
from projections.snapshotplan import newest_at_or_before
from servicekit.snapshotting import load_state, save_state

S = TypeVar("S", bound=Any)


class Rebuilt(msgspec.Struct, Generic[S], frozen=True, kw_only=True):
    """A state and how it was obtained: from which snapshot position, and how many records were folded."""

    state: S
    snapshot_seq: int = 0  # last_seq of the snapshot it started from; 0 when it started from scratch
    snapshot_ignored: str = ""  # why a stored snapshot was not used, when one was not
    folded: int = 0  # records read from the stream
    seconds: float = 0.0


async def _start(
    bus: Bus, projection: Projection[S], *, use_snapshot: bool, not_after_seq: int,
    index: dict[tuple[str, int], list[int]] | None = None,
) -> tuple[S, int, str]:
    # The newest kept snapshot not beyond `not_after_seq`, if there is a usable one.
    initial = projection.initial()
    if not use_snapshot:
        return initial, 0, ""
    loaded = await load_state(bus, projection, "replay", not_after_seq=not_after_seq, index=index)
    if loaded is not None:
        return loaded.state, loaded.header.last_seq, ""
    others = sorted({version for version, _, _ in await kept_objects(bus, projection.name)} - {projection.version})
    if others:
        return initial, 0, f"snapshots kept are of {projection.name} version {others[-1]}; this is version {projection.version}"
    data = await load_snapshot(bus, projection.name)
    if data is not None and decode_snapshot(projection, data) is None:
        return initial, 0, _why_unusable(projection, read_header(data))
    return initial, 0, ""


def _why_unusable(projection: Projection[S], header: SnapshotHeader | None) -> str:
    if header is None:
        return "snapshot is unreadable"
    return (
        f"snapshot is of {header.projection} version {header.version} (schema {header.schema}); "
        f"this is {projection.name} version {projection.version}"
    )


Progress = Callable[[int], None]  # called with the number of records read so far, every PROGRESS_EVERY
PROGRESS_EVERY = 100_000


def _with_progress(fold: Callable[[Record], None], progress: Progress | None) -> Callable[[Record], None]:
    if progress is None:
        return fold
    count = 0

    def counted(record: Record) -> None:
        nonlocal count
        fold(record)
        count += 1
        if count % PROGRESS_EVERY == 0:
            progress(count)

    return counted


def believing(state: S, candidates: Sequence[str]) -> S:
    """`state` whose fences believe elections of these candidates only (empty: leave it as it is)."""
    if not candidates:
        return state
    if isinstance(state, bundle.ProjectionSet):
        return bundle.believing(state, candidates)  # type: ignore[return-value]
    return fence.believing(state, candidates) if hasattr(state, "fence") else state


class _Tail:
    """The records after a snapshot, read while the snapshot loads: held until the fold is ready, then handed to it.

    A point's cost was its snapshot's fetch, inflate and decode, then the read of the records
    after it, one after the other; the server reads and sends those records meanwhile instead.
    """

    HELD = 200_000  # at most (~100 MB of records); past it the read pauses until the fold is ready

    def __init__(self) -> None:
        self.held: list[Record] = []
        self.fold: Callable[[Record], None] | None = None
        self.last_seq = 0  # of the newest record read
        self.handed = 0  # records handed to the fold

    def __call__(self, record: Record) -> None:
        self.last_seq = record.seq
        if self.fold is None:
            self.held.append(record)
        else:
            self.handed += 1
            self.fold(record)

    def full(self) -> bool:
        """Whether the read should stop: the hold is full (the fold reads on from `last_seq`)."""
        return self.fold is None and len(self.held) >= self.HELD

    def attach(self, fold: Callable[[Record], None]) -> None:
        """Hand the held records to `fold`, and every later one as it comes."""
        self.fold = fold
        held, self.held = self.held, []
        for record in held:
            self(record)


async def _listing(bus: Bus, use_snapshot: bool) -> dict[tuple[str, int], list[int]]:
    return await kept_index(bus) if use_snapshot else {}


def _kept_start(index: dict[tuple[str, int], list[int]], projection: Projection[Any], bound: int) -> int:
    # Where the snapshot the load will most likely start from ends: the newest kept not past `bound`.
    # A part of the bundle may start from the bundle's snapshot instead, so none is guessed for parts.
    if bundle.part_name(projection) is not None:
        return 0
    seqs = newest_at_or_before(index.get((projection.name, projection.version), []), bound)
    return seqs[0] if seqs else 0


async def _start_and_tail(
    bus: Bus, projection: Projection[S], index: dict[tuple[str, int], list[int]], *, use_snapshot: bool, bound: int,
    end_seq: int | None,
    folder: Callable[[S], Folder[S]], progress: Progress | None, stop: Callable[[], bool] | None = None,
    read_ahead_to: int | None = None,
) -> tuple[Folder[S], int, str, int]:
    """The folder started from the newest usable snapshot not past `bound`, fed the log after it up to `end_seq` (None: the end).

    `index`: the bucket's listing (kept_index). The records after the snapshot it names are read while it loads (up to
    `read_ahead_to`, default `end_seq`); when the fold starts elsewhere (an unreadable snapshot,
    a part from the bundle's, one refused by `folder`), that read is dropped and the fold reads
    from its own position. Returns the folder, the snapshot's position, why none was used, and
    the records folded.
    """
    guess = _kept_start(index, projection, bound) if use_snapshot else 0
    tail = _Tail()
    ahead = read_ahead_to if read_ahead_to is not None else end_seq
    ended = stop or (lambda: False)

    def read_ahead() -> Coroutine[Any, Any, int]:
        return replay(bus, tail, start_seq=guess + 1, end_seq=ahead, stop=lambda: tail.full() or (tail.fold is not None and ended()))

    try:
        async with asyncio.TaskGroup() as group:
            reading = group.create_task(read_ahead()) if guess else None
            state, snapshot_seq, ignored = await _start(bus, projection, use_snapshot=use_snapshot, not_after_seq=bound,
                                                        index=index)
            folding = folder(state)
            position = folding.state.last_seq  # where its fold reads from
            fold = _with_progress(folding, progress)
            if reading is not None and position == guess:
                tail.attach(fold)
            elif reading is not None:
                reading.cancel()
    except ExceptionGroup as group:  # one failing read or load: its own error, as a caller expects
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    resume = (tail.last_seq if tail.fold is not None and tail.last_seq else position) + 1
    caught_up = (stop is not None and stop()) or (end_seq is not None and resume > end_seq)
    rest = 0 if caught_up else await replay(bus, fold, start_seq=resume, end_seq=end_seq, stop=stop)
    return folding, snapshot_seq, ignored, tail.handed + rest


async def state_at_seq(
    bus: Bus,
    projection: Projection[S] = bundle.PROJECTION,  # type: ignore[assignment]  # mypy cannot tie a default to S
    seq: int | None = None,
    *,
    use_snapshot: bool = True,
    progress: Progress | None = None,
    candidates: Sequence[str] = (),
) -> Rebuilt[S]:
    """The projection as of stream sequence `seq` (default: now): snapshot if one fits, then the records after it.

    With `candidates`, elections of other nodes are not believed (see projections/fence.py `believing`).
    """
    started = time.perf_counter()
    end, index = await asyncio.gather(last_sequence(bus), _listing(bus, use_snapshot))
    end = end if seq is None else min(seq, end)
    folder, snapshot_seq, ignored, folded = await _start_and_tail(
        bus, projection, index, use_snapshot=use_snapshot, bound=end, end_seq=end, progress=progress,
        folder=lambda state: Folder(projection, believing(state, candidates)),
    )
    result = projection.finished(folder.state)
    return Rebuilt(state=result, snapshot_seq=snapshot_seq, snapshot_ignored=ignored, folded=folded,
                   seconds=time.perf_counter() - started)


# Records stored this long before `at` hold events from before `at` (a publisher stamps an
# event moments before the server stores it); the snapshot a point in time starts from is
# taken no later than that.
CLOCK_SKEW = dt.timedelta(minutes=5)


async def state_at_time(
    bus: Bus, at: dt.datetime, projection: Projection[S] = bundle.PROJECTION, *,  # type: ignore[assignment]  # as above
    use_snapshot: bool = True, progress: Progress | None = None, skew: dt.timedelta = CLOCK_SKEW,
    candidates: Sequence[str] = (),
) -> Rebuilt[S]:
    """The projection as it was at `at`: every event in log order while its time is not after `at`.

    Starts from the newest snapshot stored before `at` (less the clock skew) whose events are all
    not after `at`, and stops reading at the first later event.
    """
    started = time.perf_counter()
    after, later, end, index = await asyncio.gather(first_stored_at(bus, at - skew), first_stored_at(bus, at + skew),
                                                    last_sequence(bus), _listing(bus, use_snapshot))
    bound = end if after is None else after - 1
    folders: list[UntilFolder[S]] = []
    refused: list[str] = []

    def until(state: S) -> UntilFolder[S]:
        newest = getattr(state, "last_ts", None)
        if newest is not None and newest > at:  # a log whose times are not its storage times
            refused.append(f"snapshot at seq {state.last_seq} holds events after {at}")
            state = projection.initial()
        folders.append(UntilFolder(projection, at, believing(state, candidates)))
        return folders[-1]

    # Read ahead to the first record stored `skew` after `at` (nearly always past the stop), then on to the stop.
    folder, snapshot_seq, ignored, _ = await _start_and_tail(
        bus, projection, index, use_snapshot=use_snapshot, bound=bound, end_seq=None, progress=progress, folder=until,
        stop=lambda: folders[0].done, read_ahead_to=later,
    )
    if refused:
        snapshot_seq, ignored = 0, refused[0]
    # `folded` counts the records the fold judged: replay may deliver a few more in flight before it sees the stop.
    return Rebuilt(state=projection.finished(folder.state), snapshot_seq=snapshot_seq, snapshot_ignored=ignored,
                   folded=folders[0].read, seconds=time.perf_counter() - started)


async def store(bus: Bus, projection: Projection[S], state: S) -> SnapshotHeader:
    """Save `state` as the projection's snapshot; returns its header."""
    data = encode_snapshot(projection, projection.finished(state), taken_at=utcnow())
    await save_state(bus, projection, projection.finished(state))
    header = read_header(data)
    assert header is not None
    return header
