"""The worker's epoch fences, each brought up to the stream position of the event it judges.

The worker reads its assignments and its cancels on two durable consumers of one filter each
(services/worker/service.py): one consumer with several filters, one of them a busy event type,
costs the server seconds of CPU to set up at a year's log, wherever it starts (ops/bench/README.md,
"The worker's consumers at 22M"). The elections and lease copies the fence learns from are in
neither: before judging an event at sequence S, a fence reads what it has not seen of them below
S (a read of few subjects, milliseconds), so it knows every election stored before the event and
none after it, as when one consumer delivered them all in log order. One fence per durable: each
durable delivers its own events in log order, so no fence runs ahead of the events it judges.
A start resumes the fence the previous run saved, when it was folded from this log up to its
position (services/worker/savedfence.py), and reads only the elections and copies after it: also
once retention has trimmed the log's head, so the fence keeps the elections that aged out. A start
without one reads them from RR_CONTEXT (services/worker/contextprime.py), RR_EVENTS past its copies,
and all from RR_EVENTS only when RR_CONTEXT cannot give them all. On a log whose head was trimmed,
that read also folds on the fence of the newest cluster snapshot the log still reaches
(services/worker/snapshotseed.py), which knows the elections that aged out, and the start keeps
it where the retained log backs it (projections/fenceseed.py).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from eventbus.connection import Bus
from eventbus.directreads import read_aggregate
from eventbus.errors import BusError, BusUnavailable, InvalidEvent
from eventbus.events import Event
from eventbus.history import Record, first_sequence, last_sequence, replay
from eventbus.integrity import decode_on
from eventbus.subjects import ALL_EVENTS
from projections import fenceseed
from projections.fencing import EpochFence
from services.worker import contextprime, savedfence, snapshotseed
from services.worker.contextprime import FENCE_SUBJECTS
from services.worker.savedfence import SavedFence
from services.worker.snapshotseed import Seed

log = logging.getLogger(__name__)

# Where a start's fence came from: its saved copy, RR_CONTEXT, RR_EVENTS; "snapshot": a cluster
# snapshot's fence folded on over what the trimmed log holds after it (read as "context" or "log").
Primer = Literal["saved", "context", "log", "snapshot"]


class PositionedFence:
    """One fence and the stream position up to which it has learnt every election and lease copy."""

    def __init__(self, fence: EpochFence, position: int, anchor: savedfence.Anchor | None = None) -> None:
        self.fence = fence
        self.position = position
        self.anchor = anchor  # the newest record learnt: ties a saved fence to this log

    def learn(self, record: Record) -> None:
        """Learn one election or copy read after `position`."""
        _learn(self.fence, record)
        self.passed(record)

    def passed(self, record: Record) -> None:
        """Move past one record that teaches the fence nothing."""
        self.position = record.seq
        self.anchor = savedfence.anchor_of(record)


class SeededFold:
    """A first start's fold of the log from its head, and beside it a seed's fence folded on from the seed's position."""

    def __init__(self, candidates: tuple[str, ...], start: int, seed: Seed | None) -> None:
        self.retained = PositionedFence(EpochFence(candidates), start - 1)
        self.seeded = None if seed is None else PositionedFence(EpochFence.resumed(seed.view), seed.position)
        self._dropped = ""  # why the seed was dropped during the read

    def learn(self, record: Record) -> None:
        """Learn one election or copy: both folds (the seed's only past its position)."""
        self.retained.learn(record)
        if self.seeded is not None and record.seq > self.seeded.position:
            self.seeded.learn(record)

    def passed(self, record: Record) -> None:
        """Move past a copy that changes no verified fence: one the seed's fence, not verified, would have learnt from drops it."""
        self.retained.passed(record)
        if self.seeded is not None and record.seq > self.seeded.position:
            if self.seeded.fence.verified():
                self.seeded.passed(record)
            else:
                self.seeded, self._dropped = None, f"not verified, it would have learnt from the lease copy at seq {record.seq}"

    def verified(self) -> bool:
        """Whether the fold from the log's head is verified (contextprime.fold's question)."""
        return self.retained.fence.verified()

    def seed_only(self) -> list[str]:
        """The roles whose newest term only the seed's fence knows, once the read is done."""
        return [] if self.seeded is None else fenceseed.seed_only(self.seeded.fence.view(), self.retained.fence.view())

    def chosen(self, terms: fenceseed.Terms) -> tuple[PositionedFence, bool]:
        """The fence to start with once the read is done, and whether it is the seed's; `terms`: of the roles `seed_only` names."""
        seeded = self.seeded
        why = self._dropped or (fenceseed.refusal(seeded.fence.view(), self.retained.fence.view(), terms)
                                if seeded is not None else "")
        if why:
            log.warning("worker: the cluster snapshot's fence is not used (%s): the fence knows only what the log holds", why)
        if seeded is None or why:
            return self.retained, False
        seeded.position, seeded.anchor = self.retained.position, self.retained.anchor
        return seeded, True


class FenceFeed:
    """Fences named by the consumer whose events they judge, each read up to its own consumer's position."""

    def __init__(self, bus: Bus, names: Sequence[str], saved_at: Path | None = None) -> None:
        self._bus = bus
        self._names = tuple(names)
        self._saved_at = saved_at  # where the fence is kept between runs; None: every start is a first start
        self._fences: dict[str, PositionedFence] = {}
        self._lock = asyncio.Lock()  # one read at a time: both consumers' handlers run concurrently
        # The fence saved: the consumers' fences stay where their events are (for months, if no
        # assignment comes), so one more is brought up to the log's end before each save.
        self._kept: PositionedFence | None = None
        self._keeping = asyncio.Lock()
        self.primed_from = 0  # the sequence the last priming read started at (1: the whole log)
        self.primed_by: Primer = "log"
        self._first_seq = 0  # the log's first sequence when the fence was first folded from it

    async def prime(self, candidates: tuple[str, ...]) -> None:
        """Learn every election and copy in the log now (a durable may resume before that: a fence ahead of it only drops more).

        From the fence saved by the previous run when it was folded from this log, reading only
        what came after it; else from the log's first sequence, RR_CONTEXT's copies first (on a
        trimmed log, beside a cluster snapshot's fence folded on from its position: `_first`).
        """
        end, first_seq = await last_sequence(self._bus), await first_sequence(self._bus)
        self._first_seq = first_seq
        fenced, self.primed_by = await self._resumed(candidates, end), "saved"
        read_from = fenced.position + 1 if fenced is not None else max(1, first_seq)
        self.primed_from = read_from
        if fenced is None:
            fenced = await self._first(candidates, read_from, end)
        else:
            await replay(self._bus, fenced.learn, subjects=FENCE_SUBJECTS, start_seq=read_from, end_seq=end)
        # Read up to the end: the save after priming goes on from there, not from the newest election,
        # which can be months of log back.
        fenced.position = max(fenced.position, end)
        self._fences = {name: PositionedFence(copy.deepcopy(fenced.fence), end, fenced.anchor) for name in self._names}
        self._kept = fenced

    async def save(self) -> None:
        """Bring the kept fence up to the log's end and write it for the next start (not when it has no record to anchor it).

        A bus that does not answer leaves the fence where its read stopped: still the fold up to its position.
        """
        kept = self._kept
        if self._saved_at is None or kept is None:
            return
        async with self._keeping:
            try:
                end = await last_sequence(self._bus)
                await replay(self._bus, kept.learn, subjects=FENCE_SUBJECTS, start_seq=kept.position + 1, end_seq=end)
                kept.position = max(kept.position, end)
                # Anchored at its position, the newest record: it stays in the log long after the
                # elections do, so the next start knows this log again once retention trimmed its head.
                at_position = await read_aggregate(self._bus, ALL_EVENTS, kept.position, kept.position)
                kept.anchor = next((savedfence.anchor_of(r) for r in at_position if r.seq == kept.position), kept.anchor)
            except BusError:
                pass
            if kept.anchor is not None:
                await savedfence.save(self._saved_at, SavedFence(view=kept.fence.view(), position=kept.position,
                                                                 first_seq=self._first_seq, anchor=kept.anchor))

    async def _first(self, candidates: tuple[str, ...], start: int, end: int) -> PositionedFence:
        """A first start's fence: every election and copy from the log's first sequence `start` up to `end`.

        RR_CONTEXT's copies first, then RR_EVENTS after them; all from RR_EVENTS when RR_CONTEXT cannot
        give every record of the range. On a log whose head was trimmed (`start` > 1), folded on from
        a cluster snapshot's fence where one backs it (loaded while RR_CONTEXT is read).
        """
        seed, copied = await asyncio.gather(
            snapshotseed.load(self._bus, candidates, start, end) if start > 1 else _nothing(),
            contextprime.read(self._bus, start, end) if start <= end else _nothing())
        fold, read_from, self.primed_by = SeededFold(candidates, start, seed), start, "log"
        if copied is not None and contextprime.fold(copied, fold.learn, fold.passed, fold.verified):
            read_from, self.primed_by = copied.through + 1, "context"
        else:  # what it learnt from a partial fold is read again from RR_EVENTS
            fold = SeededFold(candidates, start, seed)
        await replay(self._bus, fold.learn, subjects=FENCE_SUBJECTS, start_seq=read_from, end_seq=end)
        fenced, seeded = fold.chosen(await snapshotseed.newest_terms(self._bus, fold.seed_only()))
        if seeded:
            self.primed_by = "snapshot"
        return fenced

    async def _resumed(self, candidates: tuple[str, ...], end: int) -> PositionedFence | None:
        saved = await savedfence.load(self._saved_at) if self._saved_at is not None else None
        if saved is None:
            return None
        try:
            anchored = await read_aggregate(self._bus, ALL_EVENTS, saved.anchor.seq, saved.anchor.seq)
        except BusUnavailable:
            raise
        except BusError:  # a stream refusing direct gets: its anchor cannot be checked, so the full read
            return None
        if not savedfence.resumable(saved, candidates, end, next(iter(anchored), None)):
            return None
        self._first_seq = saved.first_seq
        return PositionedFence(EpochFence.resumed(saved.view), saved.position, saved.anchor)

    async def admit(self, name: str, event: Event, seq: int) -> bool:
        """Whether the event stored at `seq` may take effect, judged by `name`'s fence once it knows every election before it."""
        async with self._lock:
            fenced = self._fences[name]
            if fenced.position < seq - 1:
                # Each fence reads from its own position: a shared buffer would grow with the lease
                # copies for as long as the other consumer gets nothing (cancels are rare).
                await replay(self._bus, fenced.learn, subjects=FENCE_SUBJECTS, start_seq=fenced.position + 1, end_seq=seq - 1)
                fenced.position = seq - 1
            return fenced.fence.admit(event)

    def fence(self, name: str) -> EpochFence:
        """The fence of one consumer (its statistics, for tests and status)."""
        return self._fences[name].fence


async def _nothing() -> None:
    return None


def _learn(fence: EpochFence, record: Record) -> None:
    try:
        fence.judge_and_learn(decode_on(record.subject, record.data, record.headers))
    except InvalidEvent:
        pass
