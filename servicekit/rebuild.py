"""The imperative shell around the folds: load a snapshot, fold the log's tail, rebuild at a sequence or a time.

Everything here goes through eventbus APIs (history.replay, snapshots); the folds stay pure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import msgspec

from eventbus.connection import Bus
from eventbus.events import utcnow
from eventbus.history import Record, first_stored_at, last_sequence, replay
from eventbus.snapshots import kept_index, kept_objects, load_snapshot
from projections import bundle, fence
from projections.base import Folder, Projection, UntilFolder
from projections.snapshot import SnapshotHeader, decode_snapshot, encode_snapshot, read_header
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
    bus: Bus, projection: Projection[S], index: dict[tuple[str, int], list[int]], *, use_snapshot: bool, not_after_seq: int
) -> tuple[S, int, str]:
    # The newest kept snapshot not beyond `not_after_seq`, if there is a usable one (`index`: the bucket's listing).
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


async def _listing(bus: Bus, use_snapshot: bool) -> dict[tuple[str, int], list[int]]:
    # One listing of the bucket, in the same round as the log's end: the snapshot's choice and its load share it.
    return await kept_index(bus) if use_snapshot else {}


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
    state, snapshot_seq, ignored = await _start(bus, projection, index, use_snapshot=use_snapshot, not_after_seq=end)
    folder = Folder(projection, believing(state, candidates))
    folded = await replay(bus, _with_progress(folder, progress), start_seq=folder.state.last_seq + 1, end_seq=end)
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
    after, end, index = await asyncio.gather(first_stored_at(bus, at - skew), last_sequence(bus), _listing(bus, use_snapshot))
    bound = end if after is None else after - 1
    state, snapshot_seq, ignored = await _start(bus, projection, index, use_snapshot=use_snapshot, not_after_seq=bound)
    newest = getattr(state, "last_ts", None)
    if newest is not None and newest > at:  # a log whose times are not its storage times
        state, snapshot_seq, ignored = projection.initial(), 0, f"snapshot at seq {snapshot_seq} holds events after {at}"
    folder = UntilFolder(projection, at, believing(state, candidates))
    # `folded` counts the records the fold judged: replay may deliver a few more in flight before it sees the stop.
    await replay(bus, _with_progress(folder, progress), start_seq=state.last_seq + 1, stop=lambda: folder.done)
    return Rebuilt(state=projection.finished(folder.state), snapshot_seq=snapshot_seq, snapshot_ignored=ignored,
                   folded=folder.read, seconds=time.perf_counter() - started)


async def store(bus: Bus, projection: Projection[S], state: S) -> SnapshotHeader:
    """Save `state` as the projection's snapshot; returns its header."""
    data = encode_snapshot(projection, projection.finished(state), taken_at=utcnow())
    await save_state(bus, projection, projection.finished(state))
    header = read_header(data)
    assert header is not None
    return header
