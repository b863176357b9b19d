"""Attempt supervision, pure: which running attempts have ended (node lost, deadline, silence) and which items to give up.

The leader never re-assigns a live attempt directly: it first records the attempt as ended on
the node's behalf, with why, which puts the item back to pending, so every ended attempt and
its reason is in the log and a successor leader can list them. An attempt whose node went
offline is handed back (WORK_HANDED_BACK: a node removed, restarted or cut off is no fault of
the job); one past its deadline or silent is failed (WORK_ATTEMPT_FAILED) and counts towards
max_attempts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import msgspec

from config.sections.scheduler import SchedulerSettings
from eventbus.events import AttemptOutcome
from projections.work import ACTIVE, WorkItem, WorkStatus


class FailAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """Record the current attempt as failed (its node is gone, or it ran out of time)."""

    work_id: str
    node: str
    attempt: int
    reason: str


class HandBack(msgspec.Struct, frozen=True, kw_only=True):
    """Record the current attempt as handed back: its node is gone, which is not the job's fault."""

    work_id: str
    node: str
    attempt: int
    reason: str


class GiveUp(msgspec.Struct, frozen=True, kw_only=True):
    """Stop trying the item: every allowed attempt failed."""

    work_id: str
    reason: str
    attempts: tuple[AttemptOutcome, ...]


Decision = FailAttempt | HandBack | GiveUp


def node_lost(item: WorkItem, alive: frozenset[str], offline_seq: Mapping[str, int] | None = None) -> str | None:
    """Why the item's live attempt is to be handed back (its node is offline), or None.

    `offline_seq`: where each offline node's HOST_OFFLINE is in the log. An attempt its node
    started or reported on after that is no orphan: the node is back (an `rr up` restarted after a
    drain starts the assignment it missed before its first heartbeat makes it online again).
    """
    if item.status not in ACTIVE or item.node is None or item.node in alive:
        return None
    went = (offline_seq or {}).get(item.node)
    if went is not None and item.status is WorkStatus.RUNNING and item.updated_seq > went:
        return None
    return f"node {item.node} went offline"


def attempt_trouble(item: WorkItem, now: dt.datetime, settings: SchedulerSettings) -> str | None:
    """Why the item's live attempt must be failed (deadline, silence), or None while it is healthy."""
    if item.status not in ACTIVE or item.node is None:
        return None
    if item.deadline is not None and now >= item.deadline:
        return f"deadline {item.deadline.isoformat()} passed"
    if item.updated_at is not None:
        silent = (now - item.updated_at).total_seconds()
        if silent >= settings.progress_timeout_s:
            return f"no start or progress for {silent:.0f}s (progress_timeout_s {settings.progress_timeout_s:g})"
    return None


def supervise_item(item: WorkItem, now: dt.datetime, alive: frozenset[str], settings: SchedulerSettings,
                   offline_seq: Mapping[str, int] | None = None) -> Decision | None:
    """The decision for one item now, if any."""
    lost = node_lost(item, alive, offline_seq)
    if lost is not None:
        assert item.node is not None
        return HandBack(work_id=item.work_id, node=item.node, attempt=item.attempt, reason=lost)
    trouble = attempt_trouble(item, now, settings)
    if trouble is not None:
        assert item.node is not None
        return FailAttempt(work_id=item.work_id, node=item.node, attempt=item.attempt, reason=trouble)
    waited = unschedulable_wait(item, now)
    if waited is not None and settings.unschedulable_fail_after_s > 0 and waited >= settings.unschedulable_fail_after_s:
        reason = (f"unschedulable for {waited:.0f}s (scheduler.unschedulable_fail_after_s "
                  f"{settings.unschedulable_fail_after_s:g}): {item.unschedulable}")
        return GiveUp(work_id=item.work_id, reason=reason, attempts=item.outcomes)
    if item.status is WorkStatus.PENDING and item.failures >= settings.max_attempts:
        last = item.outcomes[-1].reason if item.outcomes else item.reason
        n = item.failures
        reason = f"gave up after {n} failed attempt{'s' if n != 1 else ''} (max_attempts {settings.max_attempts}): {last}"
        return GiveUp(work_id=item.work_id, reason=reason, attempts=item.outcomes)
    if item.status is WorkStatus.PENDING and item.handed_back >= settings.max_hand_backs:
        reason = f"gave up after {item.handed_back} hand-backs (max_hand_backs {settings.max_hand_backs}): {item.reason}"
        return GiveUp(work_id=item.work_id, reason=reason, attempts=item.outcomes)
    return None


def unschedulable_wait(item: WorkItem, now: dt.datetime) -> float | None:
    """Seconds a pending item has been marked unschedulable, None when it is not."""
    if item.status is not WorkStatus.PENDING or item.unschedulable_since is None:
        return None
    return (now - item.unschedulable_since).total_seconds()


def supervise(items: Iterable[WorkItem], now: dt.datetime, alive: frozenset[str], settings: SchedulerSettings,
              offline_seq: Mapping[str, int] | None = None) -> list[Decision]:
    """Every decision due now, over all items (`offline_seq`: see node_lost)."""
    decisions = []
    for item in items:
        decision = supervise_item(item, now, alive, settings, offline_seq)
        if decision is not None:
            decisions.append(decision)
    return decisions


def assignable(item: WorkItem, settings: SchedulerSettings) -> bool:
    """Whether a pending item may get another attempt."""
    return (item.status is WorkStatus.PENDING and item.failures < settings.max_attempts
            and item.handed_back < settings.max_hand_backs)
