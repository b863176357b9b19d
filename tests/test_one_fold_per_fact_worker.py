"""One fold per fact, for the worker: the work fold answers what the worker's own item view answered.

The removed copy (services/worker/protocol.ItemView and its reading in decide_assignment) is kept
here, verbatim, as the oracle, as tests/test_one_fold_per_fact.py keeps the others; and no service
may fold an item's attempts beside the work fold.
"""

from __future__ import annotations

import ast
import datetime as dt
import inspect
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus import events as ev
from projections import work
from projections.base import fold_events
from projections.syncwork import SYNC_WORK
from services.worker import protocol
from tests.terms import TERM, decided

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NODES = ("a", "b")

_node = st.sampled_from(NODES)
_attempt = st.integers(1, 3)
_ts = st.integers(0, 10_000).map(lambda s: T0 + dt.timedelta(seconds=s))


# ---- the removed copy: services/worker/protocol.ItemView and its reading in decide_assignment, as they were ----


class ItemView(msgspec.Struct, frozen=True, kw_only=True):
    work_id: str
    added: ev.WorkAdded | None = None
    attempt: int = 0
    node: str | None = None
    started: frozenset[tuple[int, str]] = frozenset()
    ended: frozenset[tuple[int, str]] = frozenset()
    closed: str = ""


def fold_item_copy(view: ItemView, event: ev.Event) -> ItemView:
    replace = msgspec.structs.replace
    if isinstance(event, ev.WorkAdded):
        return replace(view, added=event)
    if isinstance(event, ev.WorkAssigned):
        if event.attempt <= view.attempt:
            return view
        return replace(view, attempt=event.attempt, node=event.node)
    if isinstance(event, ev.WorkStarted):
        return replace(view, started=view.started | {(event.attempt, event.node)})
    if isinstance(event, ev.WorkCompleted):
        return replace(view, ended=view.ended | {(event.attempt, event.node)}, closed="completed")
    if isinstance(event, (ev.WorkAttemptFailed, ev.WorkHandedBack)):
        return replace(view, ended=view.ended | {(event.attempt, event.node)})
    if isinstance(event, ev.WorkFailed):
        return replace(view, closed=view.closed or "failed")
    if isinstance(event, ev.WorkCancelled):
        return replace(view, closed=view.closed or "cancelled")
    return view


def decide_copy(assignment: ev.WorkAssigned, node: str, view: ItemView, now: dt.datetime) -> protocol.Decision:
    """decide_assignment past the checks that need no history (another node's, stale, held), as it was."""
    mine = (assignment.attempt, node)
    if view.closed:
        return protocol.Ignore(reason=f"item already {view.closed}")
    if view.attempt > assignment.attempt:
        return protocol.Ignore(reason=f"superseded by attempt {view.attempt} on {view.node}")
    if mine in view.ended:
        return protocol.Ignore(reason="attempt already ended")
    if mine in view.started:
        return protocol.Ignore(reason="attempt already started by an earlier worker process")
    if assignment.deadline <= now:
        return protocol.Ignore(reason=f"deadline {assignment.deadline.isoformat()} already passed")
    if view.added is None:
        return protocol.Refuse(reason=f"work item {assignment.work_id} has no WORK_ADDED in the log")
    if view.added.work_type == SYNC_WORK:
        return protocol.Ignore(reason="a sync item: the node's sync service copies the batch, no process runs")
    return protocol.Start(assignment=assignment, item=view.added)


# One item's own subjects as a worker reads them: no elections, leader decisions with or without
# a term's epoch (the worker judged the assignment it acts on with its own fence).
_added = st.builds(lambda ts, kind: ev.WorkAdded(work_id="w1", work_type=kind, board_type="hex8", num_players=2, ts=ts),
                  _ts, st.sampled_from(["selfplay", "selfplay", SYNC_WORK]))
# Every kind of report but the addition, drawn directly: filtering the addition out of all of them
# (or picking it out of them) discarded enough draws to fail hypothesis's filter health check now and then.
_not_added = st.one_of(
    st.builds(lambda n, a, d, e: ev.WorkAssigned(work_id="w1", node=n, attempt=a, deadline=d, epoch=e),
              _node, _attempt, _ts, st.sampled_from([None, 1, 7])),
    st.builds(lambda n, a: ev.WorkStarted(work_id="w1", node=n, attempt=a), _node, _attempt),
    st.builds(lambda n, a: ev.WorkProgress(work_id="w1", node=n, attempt=a, fraction=0.5), _node, _attempt),
    st.builds(lambda n, a: ev.WorkAttemptFailed(work_id="w1", node=n, attempt=a, reason="exit 1"), _node, _attempt),
    st.builds(lambda n, a: ev.WorkHandedBack(work_id="w1", node=n, attempt=a, reason="node gone"), _node, _attempt),
    st.builds(lambda n, a: ev.WorkCompleted(work_id="w1", node=n, attempt=a), _node, _attempt),
    st.builds(lambda e: ev.WorkFailed(work_id="w1", reason="gave up", epoch=e), st.sampled_from([None, 1])),
    st.builds(lambda: ev.WorkCancelled(work_id="w1", reason="operator")),
)


@settings(max_examples=300, deadline=None)
@given(before=st.lists(_not_added, max_size=4), added=_added,
       after=st.lists(_not_added, max_size=14), attempt=_attempt)
def test_the_work_item_answers_what_the_workers_item_view_answered(
    before: list[ev.Event], added: ev.Event, after: list[ev.Event], attempt: int
) -> None:
    # The item's history from its WORK_ADDED on: the copy and the shared fold agree on every fact a
    # worker reads, so every decision on an assignment and every recovery plan is the same.
    history = [added, *after]
    view = ItemView(work_id="w1")
    for event in history:
        view = fold_item_copy(view, event)
    item = work.item_history("w1", list(enumerate(history, start=1)))
    assert item is not None
    assert (set(item.started), set(item.settled), protocol.item_over(item)) == (view.started, view.ended, view.closed)
    assert len(set(item.started)) == len(item.started) and len(set(item.settled)) == len(item.settled)
    if not view.closed:
        assert (item.attempt, item.node) == (view.attempt, view.node)
    for node in NODES:
        assignment = ev.WorkAssigned(work_id="w1", node=node, attempt=attempt, deadline=T0 + dt.timedelta(seconds=5000))
        now = T0 + dt.timedelta(seconds=1)
        assert protocol.decide_assignment(assignment, node, True, list(enumerate(history, start=1)), [], now) == \
            decide_copy(assignment, node, view, now)
    # Told apart: what named the item before its WORK_ADDED the copy took as its history; the shared
    # fold refuses it (about an unknown item), as the leader's fold did when it assigned the item.
    early = work.item_history("w1", list(enumerate([*before, *history], start=1)))
    assert early is not None and (early.started, early.settled, early.completed_by) == (
        item.started, item.settled, item.completed_by)


def test_a_completion_the_lifecycle_refuses_still_closes_the_item_for_a_worker() -> None:
    # Attempt 1 on a was superseded before it ended; its completion came before attempt 2 started (JetStream
    # stored it) and the work fold refuses it as from a superseded attempt. Its work is done all the same.
    history: list[ev.Event] = [
        ev.WorkAdded(work_id="w1", work_type="selfplay", board_type="hex8", num_players=2),
        ev.WorkAssigned(work_id="w1", node="a", attempt=1, deadline=T0, epoch=1),
        ev.WorkStarted(work_id="w1", node="a", attempt=1),
        ev.WorkAssigned(work_id="w1", node="b", attempt=2, deadline=T0, epoch=1),
        ev.WorkCompleted(work_id="w1", node="a", attempt=1),
    ]
    item = work.item_history("w1", list(enumerate(history, start=1)))
    assert item is not None and item.status is work.WorkStatus.ASSIGNED and item.attempt == 2
    assert (item.completed_by, item.settled, protocol.item_over(item)) == ((1, "a"), ((1, "a"),), "completed")
    decision = protocol.decide_assignment(history[3], "b", True, list(enumerate(history, start=1)), [], T0 - dt.timedelta(1))
    assert decision == protocol.Ignore(reason="item already completed")


def test_the_fleet_fold_keeps_the_same_attempt_facts_as_one_items_history() -> None:
    # One fold, two readers: the leader's fenced fold of the whole log and a worker's unfenced fold of one
    # item's subjects give the item the same facts when every decision is its term's.
    history: list[ev.Event] = [
        ev.WorkAdded(work_id="w1", work_type="selfplay", board_type="hex8", num_players=2),
        decided(ev.WorkAssigned(work_id="w1", node="a", attempt=1, deadline=T0)),
        ev.WorkStarted(work_id="w1", node="a", attempt=1),
        decided(ev.WorkHandedBack(work_id="w1", node="a", attempt=1, reason="node gone")),
        ev.WorkAttemptFailed(work_id="w1", node="a", attempt=1, reason="killed"),  # refused: the attempt had ended
        decided(ev.WorkAssigned(work_id="w1", node="b", attempt=2, deadline=T0)),
        ev.WorkStarted(work_id="w1", node="b", attempt=2),
    ]
    fleet = fold_events(work.PROJECTION, list(enumerate([TERM, *history], start=1))).items["w1"]
    worker = work.item_history("w1", list(enumerate(history, start=2)))
    assert fleet == worker
    assert (fleet.started, fleet.settled, fleet.handed_back, fleet.failures) == (((1, "a"), (2, "b")), ((1, "a"),), 1, 0)


# ---- no second fold of an item's attempts in services/ ------------------------------------------

_STARTED = {"WorkStarted"}
_ENDS = {"WorkCompleted", "WorkAttemptFailed", "WorkHandedBack"}
# Functions that read assignments, starts and ends without keeping an item's state: each with why.
_NOT_FOLDS = {
    ("services/api/fleetmetrics.py", "observe"): "samples timings (assigned after added, a job's duration) for metrics",
}


def attempt_folds(source: str) -> list[str]:
    """Functions in `source` that branch on an item's assignments, starts and ends: the shape of a lifecycle fold."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        named: set[str] = set()
        for call in ast.walk(fn):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "isinstance":
                named |= {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(call.args[-1])
                          if isinstance(n, (ast.Name, ast.Attribute))}
        if "WorkAssigned" in named and named & _STARTED and named & _ENDS:
            found.append(fn.name)
    return found


def test_no_service_folds_an_items_attempts_beside_the_work_fold() -> None:
    # An item's lifecycle has one fold, projections/work.py; a service that wants to know which attempts
    # started or ended reads a WorkItem (work.item_history for one item's subjects) instead of folding its own.
    root = Path(__file__).resolve().parent.parent
    folds = [f"{path.relative_to(root)}: {name}" for path in sorted((root / "services").rglob("*.py"))
             for name in attempt_folds(path.read_text()) if (str(path.relative_to(root)), name) not in _NOT_FOLDS]
    assert folds == [], f"a second fold of work items' attempts: {folds}; read projections/work.py's WorkItem instead"


def test_the_attempt_fold_check_finds_the_copy_the_worker_had() -> None:
    source = inspect.getsource(fold_item_copy)
    assert attempt_folds(source) == ["fold_item_copy"]
    assert attempt_folds(inspect.getsource(protocol.decide_stops)) == []  # reads one event, keeps nothing
