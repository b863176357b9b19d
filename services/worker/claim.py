"""Claiming an attempt: its WORK_STARTED is stored only while the assignment it answers is the item's newest event.

The worker decides on an assignment from the item's history as read when the assignment arrives;
the job then waits for a slot, its inputs, its process. Whatever reached the item meanwhile -- the
late completion of an older attempt (a worker cut off from the cluster reconnects), a cancel, a
newer assignment -- would be overrun by an unconditional WORK_STARTED: two attempts would complete
one item (ops/chaos found it). So WORK_STARTED carries the assignment's stream sequence as its
fence on the item's subjects (protocol.assignment_fence) and JetStream refuses it once anything
newer is stored. A refusal is judged again on the whole history (protocol.recheck_start): the item
moved on (the attempt is dropped before it counts), or only another attempt's report came in
between (tried again, fenced on the newest event).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec

from eventbus.errors import BusError, Fenced
from eventbus.events import WorkAssigned, WorkStarted
from eventbus.publisher import FenceToken, Published, Publisher
from services.worker.protocol import Claim, Claimed, Ignore, assignment_fence

log = logging.getLogger(__name__)

CLAIM_TRIES = 5  # refusals judged "start anyway" in a row before the attempt is handed back
BUS_RETRY_S = (0.5, 1.0, 2.0, 5.0)  # pauses between tries of a publish that got no answer

Recheck = Callable[[WorkStarted, WorkAssigned], Awaitable[Claim | Claimed | Ignore]]


class Unclaimed(msgspec.Struct, frozen=True, kw_only=True):
    """The attempt must not run: why, and whether it is handed back (the leader assigns it again) or just dropped."""

    reason: str
    hand_back: bool = False


async def claim_start(publisher: Publisher, started: WorkStarted, assignment: WorkAssigned, assigned_seq: int,
                      recheck: Recheck) -> int | Unclaimed:
    """Store `started` (stamped) fenced on the assignment at `assigned_seq`: its stream sequence, or why it may not run.

    Raises BusError when the bus answers neither way after a few tries (the job then runs unfenced, as before).
    """
    if not assigned_seq:  # where the assignment sits is unknown: nothing to fence on
        return (await publisher.publish(started)).seq
    seq = assigned_seq
    for _ in range(CLAIM_TRIES):
        try:
            return (await _publish_answered(publisher, started, assignment_fence(assignment.work_id, seq))).seq
        except Fenced:
            verdict = await recheck(started, assignment)
        if isinstance(verdict, Claimed):
            return verdict.seq
        if isinstance(verdict, Ignore):
            return Unclaimed(reason=f"the item moved on since its assignment: {verdict.reason}")
        log.info("worker: WORK_STARTED of %s attempt %d refused at seq %d; only reports of other attempts came in "
                 "between: trying again after seq %d", assignment.work_id, assignment.attempt, seq, verdict.seq)
        seq = verdict.seq
    return Unclaimed(reason=f"its WORK_STARTED was refused {CLAIM_TRIES} times in a row: the item kept changing",
                     hand_back=True)


async def _publish_answered(publisher: Publisher, started: WorkStarted, fence: FenceToken) -> Published:
    # A fenced publish is tried once by the publisher; one that got no answer is tried again here with the
    # same id. Had the first try been stored, the retry is refused (the server checks the fence before its
    # dedupe) and recheck_start finds the stored event by its id.
    for pause in BUS_RETRY_S:
        try:
            return await publisher.publish(started, fence=fence)
        except Fenced:
            raise
        except BusError as exc:
            log.warning("worker: WORK_STARTED of %s attempt %d not answered (%s); trying again",
                        started.work_id, started.attempt, exc)
        await asyncio.sleep(pause)
    return await publisher.publish(started, fence=fence)
