"""The worker's epoch fences, each brought up to the stream position of the event it judges.

The worker reads its assignments and its cancels on two durable consumers of one filter each
(services/worker/service.py): one consumer with several filters, one of them a busy event type,
costs the server seconds of CPU to set up at a year's log, wherever it starts (ops/bench/README.md,
"The worker's consumers at 22M"). The elections and lease copies the fence learns from are in
neither: before judging an event at sequence S, a fence reads what it has not seen of them below
S (a read of few subjects, milliseconds), so it knows every election stored before the event and
none after it, as when one consumer delivered them all in log order. One fence per durable: each
durable delivers its own events in log order, so no fence runs ahead of the events it judges.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence

from eventbus.connection import Bus
from eventbus.errors import InvalidEvent
from eventbus.events import Event
from eventbus.history import Record, last_sequence, replay
from eventbus.integrity import decode_on
from eventbus.leasecopy import COPIES
from eventbus.subjects import EVENTS_ROOT
from projections.fencing import EpochFence

LEADER_EVENTS = f"{EVENTS_ROOT}.leader.>"
FENCE_SUBJECTS = (LEADER_EVENTS, COPIES)  # few subjects (elections and lease copies): one consumer reads both cheaply


class PositionedFence:
    """One fence and the stream position up to which it has learnt every election and lease copy."""

    def __init__(self, fence: EpochFence, position: int) -> None:
        self.fence = fence
        self.position = position

    def learn(self, record: Record) -> None:
        """Learn one election or copy read after `position`."""
        _learn(self.fence, record)
        self.position = record.seq


class FenceFeed:
    """Fences named by the consumer whose events they judge, each read up to its own consumer's position."""

    def __init__(self, bus: Bus, names: Sequence[str]) -> None:
        self._bus = bus
        self._names = tuple(names)
        self._fences: dict[str, PositionedFence] = {}
        self._lock = asyncio.Lock()  # one read at a time: both consumers' handlers run concurrently

    async def prime(self, candidates: tuple[str, ...]) -> None:
        """Learn every election and copy in the log now (a durable may resume before that: a fence ahead of it only drops more)."""
        fenced = PositionedFence(EpochFence(candidates), 0)  # elections of others are not believed
        end = await last_sequence(self._bus)
        await replay(self._bus, fenced.learn, subjects=FENCE_SUBJECTS, end_seq=end)
        self._fences = {name: PositionedFence(copy.deepcopy(fenced.fence), end) for name in self._names}

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


def _learn(fence: EpochFence, record: Record) -> None:
    try:
        fence.judge_and_learn(decode_on(record.subject, record.data, record.headers))
    except InvalidEvent:
        pass
