"""One leadership term as the leader's work sees it: its epoch, whether it may still act, fenced publishing.

Every decision is published with the term's fence (eventbus.publisher.FenceToken): JetStream
stores it only while the role's newest LEADER_ELECTED is still this term's own, checked in the
same step that stores it. So a leader paused after its last lease check (SIGSTOP, a long GC,
a partition) cannot store a decision once a successor's election is in the log, whatever its
clock says; the refusal (`Fenced`) ends the term at once.

One publish carries one expected-last-subject-sequence check, and the fence takes it. The
per-item optimistic concurrency that decisions had before (the item's last sequence) is
replaced by two things that together give the same guarantee:
  - only one term can store decisions at a time (the fence), and each term folds the log up to
    its own election before deciding and reads back its own decisions before deciding again,
    so no decision of the leader races another decision of a leader;
  - what remains are races with non-leader writers of the same item (a worker's report, an
    operator's cancel). Log order settles those: every fold judges each event against the item
    as the log has it, by the transition table (projections/work.py), and records an event that
    no longer fits (an assignment after a cancel, a failed attempt that had completed) as an
    anomaly instead of applying it. The leader re-checks the item in its own fold just before
    publishing, which makes such anomalies rare, not impossible.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

import msgspec

from eventbus.errors import BusUnavailable, Fenced, StorageFull
from eventbus.events import Event
from eventbus.publisher import FenceToken, Published, Publisher, Sent

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.05  # a fenced decision without an ack is sent again after this, doubling
RETRY_MAX_S = 1.0

# Opt-in, for fault tests only: with this set to N seconds, every decision is held N seconds
# between the term's may-act check and its publish, as a GC pause or a SIGSTOP there would hold
# it, so a test can freeze the leader with a decision really in flight and show that the server's
# fence, not the leader's clock, keeps it out of the log. Unset (production): no hold.
HOLD_ENV = "RR_DEBUG_HOLD_DECISION_S"


def hold_seconds(env: Mapping[str, str]) -> float:
    """How long each decision is held after its may-act check, from $RR_DEBUG_HOLD_DECISION_S; 0 when unset (pure)."""
    raw = env.get(HOLD_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"${HOLD_ENV}={raw!r} is not a number of seconds: unset it, or set e.g. {HOLD_ENV}=0.5") from None
    if not 0 < seconds < 3600:
        raise ValueError(f"${HOLD_ENV}={raw!r} must be a positive number of seconds: unset it, or set e.g. {HOLD_ENV}=0.5")
    return seconds


class NotLeader(Exception):
    """The term is over (or past its deadline, or fenced out): the decision was not taken."""


class Term:
    """Handed to the leader's loops on election; every decision they publish goes through it."""

    def __init__(
        self,
        role: str,
        node: str,
        epoch: int,
        previous_node: str | None,
        publisher: Publisher,
        may_act: Callable[[], bool],
        *,
        fence: FenceToken | None = None,
        on_fenced: Callable[[str], None] | None = None,
        hold_s: float = 0.0,
    ) -> None:
        self.role = role
        self.node = node
        self.epoch = epoch
        self.previous_node = previous_node
        self.fence = fence  # None only for a term run without an election (tests, benchmarks)
        self._publisher = publisher
        self._may_act = may_act
        self._on_fenced = on_fenced
        self._hold_s = hold_s  # $RR_DEBUG_HOLD_DECISION_S: fault tests only
        self.fenced_out: str | None = None  # why the server refused a decision of this term

    def may_act(self) -> bool:
        """Whether this term still holds an unexpired lease by this node's monotonic clock and was not fenced out."""
        return self.fenced_out is None and self._may_act()

    def fenced(self, event: Event) -> Event:
        """The event marked as a decision of this term."""
        return msgspec.structs.replace(event, epoch=self.epoch)

    async def publish(self, event: Event) -> Published:
        """Publish a decision with this term's epoch, stored only while this term's election is the newest.

        A publish that got no ack is sent again (same id, fence checked again by the server) while
        the term may act, so a stream failover does not end the term, and no try can be stored once
        a successor's election is. Raises NotLeader once the term may no longer act, or when the
        server refused the decision (the term then ends at once).
        """
        event = self._publisher.stamp(self.fenced(event))  # stamped once: a retry keeps its id
        delay, held = RETRY_INITIAL_S, False
        while True:
            if not self.may_act():
                raise NotLeader(self.fenced_out or f"{self.role} term {self.epoch} of {self.node} may no longer act")
            try:
                if self._hold_s and not held:
                    held = True
                    return await asyncio.shield(self._held(event))
                return await self._publisher.publish(event, fence=self.fence)
            except Fenced as exc:
                self._fenced(event, exc)
            except StorageFull:
                raise  # the server has no room: the leader's loop reports it now, not after its lease runs out
            except BusUnavailable:
                if self.fence is None:
                    raise  # an unfenced publish was already retried by the publisher
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def send(self, event: Event) -> Sent:
        """Send a decision with this term's epoch and fence without waiting for its ack (see `settle_all`).

        For a window of decisions on distinct items: each is sent as `publish` sends it, back to back,
        and the window's acks are awaited together. Raises NotLeader once the term may no longer act.
        """
        if self._hold_s:  # a fault test holds each decision in flight: sent and settled alone, as `publish` does
            published = await self.publish(event)
            return Sent(published.event, None, published)
        if not self.may_act():
            raise NotLeader(self.fenced_out or f"{self.role} term {self.epoch} of {self.node} may no longer act")
        return await self._publisher.send(self._publisher.stamp(self.fenced(event)), fence=self.fence)

    async def settle_all(self, sent: Sequence[Sent]) -> list[Published | Exception]:
        """Each sent decision's outcome: its Published, or the error it ended with (InvalidEvent, ...).

        Exactly as `publish` ends: a refusal for a newer election ends the term (NotLeader, raised),
        so does a full store (StorageFull, raised); a decision without an ack is sent again under the
        fence (same id) while the term may act.
        """
        out: list[Published | Exception] = []
        for one, outcome in zip(sent, await self._publisher.settle_all(sent, fence=self.fence)):
            if isinstance(outcome, Fenced):
                self._fenced(one.event, outcome)
            if isinstance(outcome, StorageFull):
                raise outcome
            if isinstance(outcome, BusUnavailable) and self.fence is not None:
                outcome = await self.publish(one.event)  # the same id: retried while the term may act
            out.append(outcome)
        return out

    def _fenced(self, event: Event, exc: Fenced) -> NoReturn:
        self.fenced_out = f"{self.role} term {self.epoch} of {self.node} was fenced out: {exc}"
        log.warning("the server refused %s of %s epoch %d: a newer election is in the log (%s)",
                    event.type_name(), self.role, self.epoch, exc)
        if self._on_fenced is not None:
            self._on_fenced(self.fenced_out)
        raise NotLeader(self.fenced_out) from exc

    def _held(self, event: Event) -> asyncio.Future[Published]:
        """The decision held $RR_DEBUG_HOLD_DECISION_S after its may-act check, then sent whatever happened meanwhile.

        Shielded by the caller, so ending the term does not call it back: it stands for a decision
        already past the check when the process froze, which nothing in the leader re-checks.
        """
        async def hold_then_publish() -> Published:
            log.info("holding %s of %s epoch %d for %ss after its may-act check (%s)",
                     event.type_name(), self.role, self.epoch, self._hold_s, HOLD_ENV)
            await asyncio.sleep(self._hold_s)
            return await self._publisher.publish(event, fence=self.fence)

        def outcome(task: asyncio.Future[Published]) -> None:
            if task.cancelled():
                return
            exc = task.exception()
            said = f"stored at seq {task.result().seq}" if exc is None else f"not stored: {type(exc).__name__}: {exc}"
            log.log(logging.DEBUG if exc is None else logging.WARNING, "held %s of %s epoch %d (%s=%s) sent after its hold: %s",
                    event.type_name(), self.role, self.epoch, HOLD_ENV, self._hold_s, said)

        task = asyncio.ensure_future(hold_then_publish())
        task.add_done_callback(outcome)
        return task
