"""The shell both pipeline loops share: fold the log live, decide once caught up, publish through the term.

A loop folds every record from sequence 1 into a pure state, and asks its pure `decide` for
events only when the state has seen the whole log as it was at the start and every decision
this loop already published; so a decision is never taken twice on a state that has not seen
the first one, and a new leader decides on the same history as its predecessor did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from cluster.leadership.term import NotLeader
from eventbus import tracing
from eventbus.errors import BusUnavailable, InvalidEvent
from eventbus.events import Event, WorkAdded
from eventbus.history import Record
from eventbus.integrity import decode_on
from eventbus.publisher import Published
from eventbus.tasks import raise_if_cancelled, stop_tasks
from projections.base import type_of
from servicekit.livefold import LiveFold
from servicekit.runtime import ServiceContext

log = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")

STOP_FOLLOWER_S = 2.0


class Decisions:
    """Runs a loop's pure decision step so that a bug or an odd value folded from the log cannot end the term.

    A failing step decides nothing this round and is logged once per distinct cause (it would
    fail again every round on the same state); the loop goes on and decides again on news.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self._last_cause = ""

    def __call__(self, decide: Callable[..., list[T]], *args: object) -> list[T]:
        """`decide(*args)`, or no decisions when it raises."""
        try:
            decisions = decide(*args)
        except Exception as exc:  # noqa: BLE001 - one poison event must not stop scheduling
            self.failures += 1
            cause = f"{type(exc).__name__}: {exc}"
            if cause != self._last_cause:
                log.exception("%s: deciding failed, nothing decided this round: %s", self.name, cause)
            self._last_cause = cause
            return []
        self._last_cause = ""
        return decisions


class Publishing(Protocol):
    """What a loop needs of its leadership term: fenced publishing (raises NotLeader when over)."""

    async def publish(self, event: Event) -> Published:
        """Publish one decision of the term, fenced by its election."""


class FoldingDecider(Generic[S]):
    """One term's fold-and-decide loop; `run()` returns when the term may no longer act."""

    def __init__(
        self, name: str, ctx: ServiceContext, term: Publishing, state: S,
        apply: Callable[[S, Event, int], S], reads: frozenset[str],
        decide: Callable[[S], list[Event]], every_s: float, prepare: Callable[[S], Awaitable[object]] | None = None,
    ) -> None:
        self.name = name
        self.state = state
        self._term, self._apply, self._reads, self._decide = term, apply, reads, decide
        self._every_s = every_s
        self._prepare = prepare  # the slow part of a decision, run before it off the loop (the taint closure)
        self._live = LiveFold(ctx.bus, on_record=self._on_record, who=name)  # from sequence 1, no snapshot
        self._needed = 0  # sequence the state must reach before deciding again
        self._decisions = Decisions(name)
        self.published = 0

    def _on_record(self, record: Record) -> None:
        if type_of(record.subject) in self._reads:
            try:
                self.state = self._apply(self.state, decode_on(record.subject, record.data, record.headers), record.seq)
            except InvalidEvent as exc:
                log.warning("%s: skipping undecodable record %d: %s", self.name, record.seq, exc)

    async def run(self) -> None:
        """Catch up with the log, then follow it and decide until cancelled, or until the term may no longer act."""
        self._needed = await self._live.start()
        follower = asyncio.ensure_future(self._live.follow())
        try:
            await self._decide_forever()
        except NotLeader as exc:
            log.info("%s: %s", self.name, exc)
        finally:
            # Not `suppress(CancelledError): await follower`, which would also swallow a
            # cancellation of this task arriving meanwhile; stop_tasks never does.
            await stop_tasks([follower], STOP_FOLLOWER_S)

    async def _publish(self, event: Event) -> Published | None:
        """Append a decision, fenced by the term: no earlier leader's decision lands after this term's election,
        and this fold has read the log up to that election before deciding, so an id it sees unused is unused."""
        try:
            with self._span(event):
                return await self._term.publish(event)
        except InvalidEvent as exc:  # a decision built from a bad value is refused, the others still go out
            log.error("%s: decision not published: %s", self.name, exc)
            return None

    def _span(self, event: Event) -> Any:
        """The span a decision is published in: a new trace for a new item (populator, training), else the trace
        the decision continues (an evaluation of a candidate, a promotion: the training item's), else none."""
        if isinstance(event, WorkAdded) and not event.trace:
            return tracing.root("work add", {"rr.work_id": event.work_id, "rr.requested_by": self.name})
        if event.trace:
            name = "work add" if isinstance(event, WorkAdded) else f"decide {event.type_name()}"
            return tracing.continued(event.trace, name)
        return contextlib.nullcontext()

    async def _decide_forever(self) -> None:
        while True:
            raise_if_cancelled()  # a stop that the last round's publishes lost (Python 3.11's wait_for)
            await self._live.wait_changed(self._every_s)
            if self._live.position < self._needed:
                continue
            state = self.state  # the one `prepare` readied: records folded during its await make a newer one
            if self._prepare is not None:
                await self._prepare(state)
            try:
                for event in self._decisions(self._decide, state):
                    published = await self._publish(event)
                    if published is not None:
                        self._needed = max(self._needed, published.seq)
                        self.published += 1
            except BusUnavailable as exc:
                log.warning("%s: decision not published, trying again: %s", self.name, exc)
