"""One pass over bench_forensics' log: the bundle snapshots the byte budget keeps, and each service's folds near the end.

The services keep a bundle snapshot every N records and thin the bucket to `snapshots.max_gib`
(projections/snapshotthinning.py), so at the end of a long log only a thinned set is left. The
bench needs that end state, not the history: it folds the log once, in order, and writes only the
snapshots that would survive at the end; the rest the services would have written and thinned.
Which survive depends on their sizes, known only once written, so the plan is remade after each
write from the bytes per record seen so far (snapshots grow with the log), one thinning step
denser than the estimate needs; `prune` (the services' own) then thins what was written with the
real sizes, and `exact` says whether what is left is what a service writing every one would keep.
The services' folds (distributor agent, distribution loop, sync agent and planner, the
assigner's queue) ride the same pass, each fed only the records its subjects filter would read;
folds of one projection that see the same records are one fold (the bundle's part where they
see all it reads), which at a year's scale saves gigabytes of memory and a third of the pass.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec

from eventbus.connection import Bus
from eventbus.errors import BusUnavailable
from eventbus.history import Record, replay
from ops.bench.common import log
from projections import bundle, timelinestart, workrefs
from projections.base import Folder, Projection
from projections.snapshotplan import SnapshotSettings
from projections.snapshotthinning import LADDER, Density, fitting, thinned
from servicekit.snapshotting import ChainSaver
from servicekit.telemetry.permits import subject_covers
from servicekit.workrefentries import EntryWriter

Service = Callable[[], tuple[list[Folder[Any]], tuple[str, ...]]]


# --- pure: which snapshots to write ---

def write_density(candidates: Sequence[int], every: int, bytes_per_record: float, budget: float) -> Density | None:
    """The thinning to write at: one step denser than the one whose survivors, at `bytes_per_record` x seq each, fit `budget`.

    None: write every candidate (all of them fit, or the step that fits is the ladder's densest).
    The step of margin covers snapshots growing slower than the estimate says; writing too many only
    costs time (prune drops them), writing too few would leave a point folding more than the services'.
    """
    density, _ = fitting({seq: round(bytes_per_record * seq) for seq in candidates}, every, budget)
    if density is None or LADDER.index(density) == 0:
        return None
    return LADDER[LADDER.index(density) - 1]


def survivors(candidates: Sequence[int], every: int, density: Density | None) -> list[int]:
    """The candidates that thinning at `density` keeps, relative to the newest of them (None: all)."""
    if density is None:
        return sorted(candidates)
    dropped = set(thinned(candidates, every, density))
    return sorted(seq for seq in candidates if seq not in dropped)


def exact(density: Density | None, written: int, kept: int) -> bool:
    """Whether the kept set is the one the services would have kept: everything was written, or the budget thinned what was.

    When prune dropped some of what was written, the written set did not fit the budget, so no denser
    set would have either and a service writing every candidate ends on the same thinning step.
    When it dropped nothing and not everything was written, a denser set might have fit.
    """
    return density is None or kept < written


BUNDLE = -1  # the bundle's member number in a group: it folds every record


class _Group:
    """Services whose folds of one projection have seen the same records: one fold (None: the bundle's part)."""

    def __init__(self, members: set[int], folder: Folder[Any] | None) -> None:
        self.members = members
        self.folder = folder


class SharedFolds:
    """Each service's folds over the records its consumer filters select, one fold where several see the same records.

    The filters are whole aggregates (`rr.evt.<aggregate>.>`, or the whole log) or single types
    (`rr.evt.*.*.<TYPE>.*`), so whether one matches depends only on the subject's aggregate,
    type and length: the routes are cached on those (a log has a few dozen such keys). A
    projection's folds start as one, shared with the bundle's part of that name where it has
    one (the bundle folds every record); the first record that some of its services read and
    others do not forks the fold, from its state before that record.
    """

    def __init__(self, services: Sequence[tuple[tuple[str, ...], Sequence[Projection[Any]]]],
                 whole: Folder[bundle.ProjectionSet]) -> None:
        for filters, _ in services:
            for pattern in filters:
                parts = pattern.split(".")
                aggregate = len(parts) <= 4 and parts[-1] == ">" and "*" not in parts
                one_type = len(parts) == 6 and parts[2:4] == ["*", "*"] and parts[5] == "*"
                if not (aggregate or one_type):
                    raise ValueError(f"subject filter {pattern!r}: only aggregates and single types are routed")
        self._whole = whole
        self._filters = [filters for filters, _ in services]
        self._services = [list(projections) for _, projections in services]
        self._projections = {p.name: p for projections in self._services for p in projections}
        self._groups: dict[str, list[_Group]] = {}
        for name, projection in self._projections.items():
            members = {i for i, projections in enumerate(self._services) if projection in projections}
            shared = name in bundle.PARTS and bundle.PARTS[name] is projection
            self._groups[name] = [_Group(members | {BUNDLE}, None) if shared else _Group(members, Folder(projection))]
        self._cache: dict[tuple[str, str, int], list[Folder[Any]]] = {}

    def __call__(self, record: Record) -> None:
        """Hand `record` to every fold whose services read its subject (before the bundle folds it: a fork starts before it)."""
        parts = record.subject.split(".")
        key = (".".join(parts[:3]), parts[4] if len(parts) == 6 else "", len(parts))
        folds = self._cache.get(key)
        if folds is None:
            folds = self._route(key, record.subject)
        for fold in folds:
            fold(record)

    def _route(self, key: tuple[str, str, int], subject: str) -> list[Folder[Any]]:
        covered = {i for i, filters in enumerate(self._filters) if any(subject_covers(p, subject) for p in filters)} | {BUNDLE}
        reading = [name for name, projection in self._projections.items() if key[1] in projection.reads]
        for name in reading:
            for group in list(self._groups[name]):
                inside, outside = group.members & covered, group.members - covered
                if inside and outside:
                    self._fork(name, group, inside, outside)
                    self._cache.clear()
        folds = [g.folder for name in reading for g in self._groups[name] if g.folder is not None and g.members & covered]
        self._cache[key] = folds
        return folds

    def _fork(self, name: str, group: _Group, inside: set[int], outside: set[int]) -> None:
        # The bundle reads every record, so it stays inside; the side without the group's fold gets a copy of its state.
        state = self._state(name, group)
        group.members = inside
        self._groups[name].append(_Group(outside, Folder(self._projections[name], state)))

    def _state(self, name: str, group: _Group) -> Any:
        return getattr(self._whole.state, name) if group.folder is None else group.folder.state

    def at(self, seq: int) -> list[tuple[Projection[Any], Any]]:
        """Every service's folds (in order) finished at position `seq`: they have seen every record up to it, read or not."""
        out = []
        for i, projections in enumerate(self._services):
            for projection in projections:
                group = next(g for g in self._groups[projection.name] if i in g.members)
                state = projection.finished(self._state(projection.name, group))
                out.append((projection, msgspec.structs.replace(state, last_seq=seq)))
        return out


# --- the pass ---

class Written(msgspec.Struct, frozen=True, kw_only=True):
    """What the pass wrote and how long it took."""

    candidates: int  # snapshots the services would have written (every N up to the newest)
    written: list[int]  # those written here (the rest the services' thinning would have dropped)
    bytes_per_record: float  # of the newest written snapshot (bundle, index and timeline's together)
    density: Density | None  # the plan at the end (None: every candidate written)
    fold_s: float
    save_s: float


async def _save_bundle(state: bundle.ProjectionSet, saver: ChainSaver, entries: EntryWriter) -> int:
    # As the API saves it: the bundle, then its parts that services and commands load alone, then the index's
    # per-item entries (outside the snapshot bucket). Returns the snapshots' stored (deflated) bytes,
    # which is what the budget counts.
    parts: tuple[tuple[Projection[Any], Any], ...] = (
        (bundle.PROJECTION, state), *((part, of(state)) for part, of in bundle.saved_parts()),
        (workrefs.PROJECTION, state.workrefs), (timelinestart.PROJECTION, state.cluster))
    # All of them pruned from one listing of the bucket, as the API's writer does, and their sizes read from it.
    await retrying(f"saving the bundle at {state.last_seq}", functools.partial(saver.save_all, parts))
    await retrying(f"writing the work-ref entries at {state.last_seq}", functools.partial(entries.write, state.workrefs))
    names = {projection.name for projection, _ in parts}
    assert saver.listing is not None
    return sum(kept.size for kept in saver.listing.kept if kept.name in names and kept.seq == state.last_seq)


T = TypeVar("T")


async def retrying(what: str, action: Callable[[], Awaitable[T]], tries: int = 10, first_wait_s: float = 1.0) -> T:
    """`action()`, tried again after 1, 2, 4 ... s (from `first_wait_s`) while JetStream does not answer (a loaded machine: listings
    time out at 10 s, and creating a consumer on a 22M-record stream just written took more than nats-py's 5 s, five times in a
    row over 31 s beside other work: ten tries wait up to ~8.5 min in all).

    A save tried again replaces the object of the same name, so a retry after a save that
    was stored but whose prune timed out only stores it once more.
    """
    for attempt in range(tries):
        try:
            return await action()
        except (BusUnavailable, TimeoutError) as exc:  # nats-py's own timeouts (a consumer's creation) are TimeoutErrors
            if attempt == tries - 1:
                raise
            log(f"{what}: {exc}; trying again in {first_wait_s * 2 ** attempt:g} s")
            await asyncio.sleep(first_wait_s * 2 ** attempt)
    raise AssertionError("unreachable")


async def keep_snapshots(bus: Bus, until: int, every: int, max_gib: float, services: dict[str, Service],
                         services_at: int, refs_at: int = 0, *, delta_links: int = SnapshotSettings().delta_links,
                         delta_min_bytes: int = SnapshotSettings().delta_min_bytes, delta_over: float = SnapshotSettings().delta_over,
                         ) -> tuple[Written, list[tuple[Projection[Any], Any]]]:
    """Fold the log once to `until`: write the bundle snapshots that the budget keeps at the end, and the services' states at `services_at`.

    The services' states are returned, not saved, so a catch-up without them can be timed first.
    `refs_at` (past `until`): the work-ref entries and position written there too, as the API
    writes them between snapshot saves (services/api/keeper.py, every `REFS_EVERY_EVENTS` records).
    With deltas (`delta_links` > 0) every candidate is written, as the API writes them: a delta
    needs the snapshot before it, so what thinning keeps cannot be written alone.
    """
    settings = SnapshotSettings(every_events=every, max_kept=10_000, max_gib=max_gib, delta_links=delta_links,
                                delta_min_bytes=delta_min_bytes, delta_over=delta_over)
    saver = ChainSaver(bus, settings)
    budget = max_gib * (1 << 30)
    candidates = list(range(every, until + 1, every))
    plans = {density: set(survivors(candidates, every, density)) for density in (None, *LADDER)}
    if delta_links:
        plans = dict.fromkeys(plans, set(candidates))
    whole = Folder(bundle.PROJECTION)
    entries = EntryWriter(bus)
    made = (make() for make in services.values())
    shared = SharedFolds([(subjects, [fold.projection for fold in folds]) for folds, subjects in made], whole)
    density: Density | None = None
    written: list[int] = []
    rate, fold_s, save_s, position = 0.0, 0.0, 0.0, 0
    captured: list[tuple[Projection[Any], Any]] = []

    folded = 0  # the last record folded: a read that dies is resumed after it, so no record is folded twice

    def both(record: Record) -> None:
        nonlocal folded
        shared(record)
        whole(record)
        folded = record.seq

    def bundle_only(record: Record) -> None:
        nonlocal folded
        whole(record)
        folded = record.seq

    async def fold_to(stop: int) -> None:
        # A 22M run died when creating the read's consumer took more than nats-py's 5 s beside other
        # work: the read is asked again from the record after the last one folded.
        await retrying(f"reading to {stop:,}", lambda: replay(bus, bundle_only if captured else both,
                                                             start_seq=max(position, folded) + 1, end_seq=stop))

    stops = sorted({*candidates, services_at})
    for stop in stops:
        if stop not in plans[density] and stop != services_at:
            continue
        clock = time.perf_counter()
        await fold_to(stop)
        position, fold_s = stop, fold_s + time.perf_counter() - clock
        if stop == services_at:
            captured = shared.at(stop)
        if stop in plans[density]:
            clock = time.perf_counter()
            size = await _save_bundle(bundle.PROJECTION.finished(whole.state), saver, entries)
            save_s += time.perf_counter() - clock
            written.append(stop)
            rate = size / stop
            density = None if delta_links else write_density(candidates, every, rate, budget)
            log(f"snapshot at {stop:,} ({size / 1e6:.1f} MB; folded {fold_s:.0f}s, saved {save_s:.0f}s in all; "
                f"writing at {'every' if density is None else density})")
    if refs_at > position:
        await fold_to(refs_at)
        await retrying(f"writing the work-ref entries at {refs_at}",
                       functools.partial(entries.write, bundle.PROJECTION.finished(whole.state).workrefs, relist=False))
    done = Written(candidates=len(candidates), written=written, bytes_per_record=rate, density=density, fold_s=fold_s, save_s=save_s)
    return done, captured
