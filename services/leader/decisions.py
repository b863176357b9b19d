"""One scheduling round's decisions, pure: given the queue state and the time, which events the leader owes.

First supervision (attempts to record as failed, items to give up), then, on a state that has
seen those, assignments, then placement (pending items no alive node can run, marked with why).
Each decision is bound to the sequence its item was at when decided, the precondition the shell appends it under (optimistic concurrency).
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from config.hosts import HostsConfig
from config.sections.scheduler import SchedulerSettings
from eventbus.events import (
    TEXT_MAX,
    Event,
    WorkAssigned,
    WorkAttemptFailed,
    WorkFailed,
    WorkHandedBack,
    WorkSchedulable,
    WorkUnschedulable,
)
from projections.work import WorkItem
from services.leader import queue
from services.leader.backoff import retry_at
from services.leader.placement import unschedulable
from services.leader.policy import plan_assignments
from services.leader.signals import config_signals
from services.leader.supervision import Decision, FailAttempt, HandBack, supervise
from services.leader.views import node_views, work_views


class Conditional(NamedTuple):
    """A decision on one item, to be appended only if the item's last sequence is still `expected`."""

    work_id: str
    event: Event
    expected: int


def supervision_round(state: queue.QueueState, now: dt.datetime, settings: SchedulerSettings) -> list[Conditional]:
    """Attempts in trouble to fail or hand back, and exhausted items to give up on."""
    decisions = supervise(queue.open_items(state), now, queue.alive_nodes(state), settings, queue.offline_seqs(state))
    return [Conditional(d.work_id, decision_event(d), queue.expected_seq(state, d.work_id)) for d in decisions]


def assignment_round(
    state: queue.QueueState, now: dt.datetime, hosts: HostsConfig | None, settings: SchedulerSettings
) -> list[Conditional]:
    """The WORK_ASSIGNED events the policy plans on this state."""
    nodes = node_views(state.cluster.nodes.values(), hosts, state.load, settings)
    if not state.pending or all(n.running >= n.max_parallel_jobs for n in nodes):
        return []  # nothing to place, or no free slot: skip ranking the backlog
    priorities = config_signals(state.facts, now, settings.weights.elo_velocity_window_h)
    due = [item for item in queue.pending_items(state) if retry_due(item, now, settings)]
    plan = plan_assignments(work_views(due, settings), nodes, priorities, settings)
    return [
        Conditional(work_id, assignment(state.work.items[work_id], node, now, settings), queue.expected_seq(state, work_id))
        for work_id, node in plan
    ]


def retry_due(item: WorkItem, now: dt.datetime, settings: SchedulerSettings) -> bool:
    """Whether a pending item's retry backoff (after its failed attempts) has passed."""
    until = retry_at(len(item.outcomes), item.failed_at, settings.retry_backoff)
    return until is None or now >= until


def placement_round(state: queue.QueueState, hosts: HostsConfig | None, settings: SchedulerSettings) -> list[Conditional]:
    """Marks for pending items that no alive node can run (with why), and clears for those that can again."""
    nodes = node_views(state.cluster.nodes.values(), hosts, state.load, settings)
    reasons = unschedulable(work_views(queue.pending_items(state), settings), nodes, settings)
    out = []
    for work_id, reason in reasons.items():
        item = state.work.items[work_id]
        if reason is not None and not item.unschedulable:
            event: Event = WorkUnschedulable(work_id=work_id, reason=reason[:TEXT_MAX])  # it lists alive nodes: bounded
        elif reason is None and item.unschedulable:
            event = WorkSchedulable(work_id=work_id, reason="a node that can run it is alive")
        else:
            continue
        out.append(Conditional(work_id, event, queue.expected_seq(state, work_id)))
    return out


def assignment(item: WorkItem, node: str, now: dt.datetime, settings: SchedulerSettings) -> WorkAssigned:
    """The item's next attempt on `node`, with the deadline of its work type."""
    deadlines = settings.attempt_deadline_s
    seconds = deadlines.get(item.work_type, max(deadlines.values(), default=3600.0))
    return WorkAssigned(work_id=item.work_id, node=node, attempt=item.attempt + 1, deadline=now + dt.timedelta(seconds=seconds),
                        trace=item.trace)  # one trace per item: added, assigned, started, completed


def decision_event(decision: Decision) -> Event:
    """The event recording a supervision decision."""
    if isinstance(decision, FailAttempt):
        return WorkAttemptFailed(work_id=decision.work_id, node=decision.node, attempt=decision.attempt, reason=decision.reason)
    if isinstance(decision, HandBack):
        return WorkHandedBack(work_id=decision.work_id, node=decision.node, attempt=decision.attempt, reason=decision.reason)
    return WorkFailed(work_id=decision.work_id, reason=decision.reason, attempts=list(decision.attempts))
