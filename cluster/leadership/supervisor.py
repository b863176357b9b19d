"""Keeping a term's leader-only loops running: restart what ends or fails, with jittered backoff, while the lease holds.

A leader whose loops quietly ended is worse than no leader: it holds the lease, so nobody else
takes over, and decides nothing. So every loop of a term runs under this supervisor:

- a loop that ends or fails while the term may act is restarted after a jittered backoff;
- a loop that stops because the term may not act for a moment (NotLeader during a lease
  renewal's hiccup) waits until it may act again and restarts; the elector ends the term when
  the lease is really lost;
- transient bus errors (timeouts, no responders, 503 during a stream election) are retried for
  as long as the term lasts: the bus coming back is never a reason to give up leadership;
- a loop that keeps failing otherwise (`give_up_after` failures in a row, each running less than
  `healthy_after_s`) means this term cannot lead: `run()` raises LoopsCannotRun, and the elector
  resigns (deletes its lease) so another candidate takes over.

The decisions (`after_run`, `backoff_s`) are pure; `LoopSupervisor` only performs them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping

import msgspec

from cluster.leadership.term import NotLeader
from eventbus.backoff import jittered_backoff
from eventbus.errors import is_transient
from eventbus.tasks import stop_tasks

log = logging.getLogger(__name__)


class LoopState(enum.StrEnum):
    """Where one supervised loop stands."""

    RUNNING = "running"
    BACKING_OFF = "backing-off"  # ended or failed; restarts after a delay
    WAITING = "waiting"  # the term may not act just now; restarts when it may


class LoopHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One loop's health, as the leader's lease renewals carry it to `rr leader` and `rr doctor`."""

    state: LoopState = LoopState.RUNNING
    restarts: int = 0
    ends_in_row: int = 0  # short runs in a row, however they ended: paces the backoff
    failures_in_row: int = 0  # ... of them, those that failed with a non-transient error: may resign the term
    last_error: str = ""


class SupervisorSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How quickly loops restart and when a term gives up."""

    base_s: float = 0.25  # first restart delay; doubles per failure in a row
    cap_s: float = 5.0  # longest delay: well inside one lease TTL, so a loop runs again within two
    give_up_after: int = 5  # non-transient failures in a row that make the term resign
    healthy_after_s: float = 60.0  # a run this long resets the failure count
    poll_s: float = 0.2  # how often a waiting loop checks whether the term may act again
    stop_within_s: float = 2.0  # how long cancelled loops get to end before they are abandoned


class Restart(msgspec.Struct, frozen=True, kw_only=True):
    """Start the loop again after `delay_s` (0 for a loop that waits for the term to act)."""

    delay_s: float
    health: LoopHealth


class Resign(msgspec.Struct, frozen=True, kw_only=True):
    """The loop cannot run: the term should end."""

    reason: str
    health: LoopHealth


class CancelledInside(Exception):
    """A loop ended with CancelledError although nobody cancelled it: a call it awaited was cancelled under it."""


class LoopsCannotRun(Exception):
    """A leader-only loop failed too often in a row; the term resigns so another candidate can lead."""


def backoff_s(failures: int, settings: SupervisorSettings, rng: random.Random) -> float:
    """Delay before the `failures`-th restart in a row: exponential, capped, jittered into [half, all] of it."""
    return jittered_backoff(failures, settings.base_s, settings.cap_s, rng)


def describe(exc: BaseException | None) -> str:
    """One line for an ended run: the error's type and message, or "returned"."""
    if exc is None:
        return "returned"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions[:4])
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def after_run(
    health: LoopHealth, exc: Exception | None, ran_s: float, may_act: bool, settings: SupervisorSettings, rng: random.Random
) -> Restart | Resign:
    """What follows a run of a loop that ended (`exc` None) or failed, given how long it ran and whether the term may act."""
    if not may_act or isinstance(exc, NotLeader):
        # The term's lease is unverified for a moment: not the loop's fault; the elector decides.
        return Restart(delay_s=0.0, health=msgspec.structs.replace(health, state=LoopState.WAITING, restarts=health.restarts + 1))
    short = ran_s < settings.healthy_after_s
    ends = health.ends_in_row + 1 if short else 1
    failures = health.failures_in_row if short else 0
    if exc is not None and not is_transient(exc) and not isinstance(exc, CancelledInside):  # such a cancel comes with a lost connection
        failures += 1
    failed = msgspec.structs.replace(
        health, state=LoopState.BACKING_OFF, restarts=health.restarts + 1, ends_in_row=ends, failures_in_row=failures,
        last_error=describe(exc),
    )
    if failures >= settings.give_up_after:
        return Resign(reason=f"failed {failures} times in a row, last: {failed.last_error}", health=failed)
    return Restart(delay_s=backoff_s(ends, settings, rng), health=failed)


def unhealthy(loops: Mapping[str, LoopHealth]) -> list[str]:
    """The loops not running now, as "name (state: last error)", for people."""
    return [f"{name} ({h.state.value}{': ' + h.last_error if h.last_error else ''})"
            for name, h in sorted(loops.items()) if h.state is not LoopState.RUNNING]


LoopFn = Callable[[], Awaitable[None]]


class LoopSupervisor:
    """Runs named loops for one term, restarting them per `after_run`; `run()` until cancelled or LoopsCannotRun."""

    def __init__(
        self,
        loops: Mapping[str, LoopFn],
        may_act: Callable[[], bool],
        *,
        settings: SupervisorSettings | None = None,
        on_health: Callable[[dict[str, LoopHealth]], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._loops = dict(loops)
        self._may_act = may_act
        self._settings = settings or SupervisorSettings()
        self._on_health = on_health
        self._rng = rng or random.Random()
        self.health: dict[str, LoopHealth] = {name: LoopHealth() for name in self._loops}

    async def run(self) -> None:
        """Keep every loop running; raises LoopsCannotRun when one cannot, and stops them all when cancelled."""
        self._report()
        # Plain tasks, not a TaskGroup: a loop that swallows its cancellation must not keep the
        # term (and the process's shutdown) waiting; after stop_within_s it is abandoned, logged.
        tasks = [asyncio.create_task(self._keep(name, fn), name=f"leader-loop:{name}") for name, fn in self._loops.items()]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            await stop_tasks(tasks, self._settings.stop_within_s)

    async def _keep(self, name: str, fn: LoopFn) -> None:
        while True:
            self._set(name, msgspec.structs.replace(self.health[name], state=LoopState.RUNNING))
            started = time.monotonic()
            exc: Exception | None = None
            try:
                await fn()
            except asyncio.CancelledError:
                if _being_cancelled():
                    raise  # the term is stopping us
                # A future it awaited was cancelled by someone else (a client closing its
                # requests, say): without this, the loop would be gone with no error logged.
                exc = CancelledInside("a call it awaited was cancelled under it")
            except Exception as error:  # noqa: BLE001 -- every failure is judged by after_run; cancellation passes
                exc = error
            step = after_run(self.health[name], exc, time.monotonic() - started, self._may_act(), self._settings, self._rng)
            self._set(name, step.health)
            if isinstance(step, Resign):
                log.error("leader loop %s cannot run: %s", name, step.reason)
                raise LoopsCannotRun(f"leader loop {name} {step.reason}")
            if step.health.state is LoopState.WAITING:
                await self._wait_may_act()
                continue
            log.warning("leader loop %s %s; restarting in %.1fs",
                        name, "ended" if exc is None else f"failed: {step.health.last_error}", step.delay_s)
            await asyncio.sleep(step.delay_s)

    async def _wait_may_act(self) -> None:
        while not self._may_act():
            await asyncio.sleep(self._settings.poll_s)

    def _set(self, name: str, health: LoopHealth) -> None:
        if self.health.get(name) != health:
            self.health[name] = health
            self._report()

    def _report(self) -> None:
        if self._on_health is not None:
            self._on_health(dict(self.health))


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
