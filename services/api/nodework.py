"""Work taken and reported over HTTP by a node that runs no worker: the request bodies and the rules, pure.

An HTTP-only node gets the same guarantees as a worker: the leader assigns it an attempt (it must
be a live member, as any node), `claim` starts that attempt (WORK_STARTED), `complete` and `fail`
end it (WORK_COMPLETED, WORK_ATTEMPT_FAILED). Each report is judged here by the work projection's
own rules against the item folded fresh from its events, and appended only if the item's log has
not moved since (the server enforces it), so a completion counts exactly once.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from eventbus.events import Event, WorkAttemptFailed, WorkCompleted, WorkStarted
from projections import work
from services.api.documents import ItemView

NodeId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
WorkId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
Attempt = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class ClaimBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /work/claim: start the oldest attempt assigned to `node_id` (default: the token's user)."""

    node_id: NodeId | None = None


class CompleteBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /work/complete: the attempt finished successfully."""

    work_id: WorkId
    attempt: Attempt
    node_id: NodeId | None = None
    duration_s: Annotated[float, msgspec.Meta(ge=0, le=1e7)] = 0.0


class FailBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /work/fail: the attempt failed; the leader may try the item again."""

    work_id: WorkId
    attempt: Attempt
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    node_id: NodeId | None = None
    exit_code: Annotated[int, msgspec.Meta(ge=-255, le=255)] | None = None
    cause: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class ClaimDoc(msgspec.Struct, frozen=True, kw_only=True):
    """POST /work/claim's answer: the started item, or null when nothing is assigned to the node."""

    success: bool
    work: ItemView | None
    seq: int = 0  # the WORK_STARTED's position in the log


class ReportDoc(msgspec.Struct, frozen=True, kw_only=True):
    """POST /work/complete and /work/fail's answer: the event appended."""

    success: bool
    work_id: str
    attempt: int
    status: str  # the item's status once the report is folded
    seq: int


class ForNodeDoc(msgspec.Struct, frozen=True, kw_only=True):
    """GET /work/for-node/{node_id}: the items whose current attempt is on that node and not ended."""

    node_id: str
    items: list[ItemView]
    last_seq: int


def claimable(state: work.WorkState, node: str) -> work.WorkItem | None:
    """The oldest attempt assigned to `node` and not started yet."""
    assigned = [i for i in state.items.values() if i.status is work.WorkStatus.ASSIGNED and i.node == node]
    return min(assigned, key=lambda i: i.updated_seq, default=None)


def on_node(state: work.WorkState, node: str) -> list[work.WorkItem]:
    """Items whose current attempt holds `node` (assigned or running), oldest first."""
    return sorted((i for i in state.items.values() if i.node == node and i.status in work.ACTIVE), key=lambda i: i.added_seq)


# The reports carry the HTTP-only node in their body and no source: the API's publisher stamps its
# own node's, so the subject is rr.evt.work.<id>.<TYPE>.<api node>, the only one the server lets
# the API's credentials publish (`rr auth gen`); the token (services/api/tokens.py) is what binds
# a report to its node.


def started(item: work.WorkItem, node: str) -> WorkStarted:
    """The WORK_STARTED a claim appends for `node`."""
    return WorkStarted(work_id=item.work_id, node=node, attempt=item.attempt)


def completed(body: CompleteBody, node: str) -> WorkCompleted:
    """The WORK_COMPLETED of a /work/complete for `node`."""
    return WorkCompleted(work_id=body.work_id, node=node, attempt=body.attempt, duration_s=body.duration_s)


def failed(body: FailBody, node: str) -> WorkAttemptFailed:
    """The WORK_ATTEMPT_FAILED of a /work/fail for `node`."""
    return WorkAttemptFailed(work_id=body.work_id, node=node, attempt=body.attempt, reason=body.reason,
                             exit_code=body.exit_code, cause=body.cause)


def fold_item(events: list[tuple[int, Event]]) -> work.WorkItem | None:
    """One item as its own events make it (events of other aggregates are not passed)."""
    state = work.WorkState()
    for seq, event in events:
        state = work.apply(state, event, seq)
    return next(iter(state.items.values()), None)


def problem(item: work.WorkItem | None, event: Event, work_id: str) -> str | None:
    """Why `event` would not apply to `item` by the work projection's rules; None when it would."""
    if item is None:
        return f"work_id: no work item {work_id}"
    if work.late_completion(item, event):
        return None
    if (stale := work.attempt_problem(item, event)) is not None:
        return f"attempt: {stale}"
    if type(event) not in work.TRANSITIONS[item.status]:
        return f"work item {work_id} is {item.status.value}: {event.type_name()} does not apply"
    return None
