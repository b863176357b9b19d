"""Attempt supervision, pure: node lost, deadline passed, silence, giving up after max_attempts."""

from __future__ import annotations

import datetime as dt

from config.hosts import HostEntry, HostsConfig
from config.sections.scheduler import SchedulerSettings
from eventbus.events import (
    AttemptOutcome,
    Event,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
    WorkHandedBack,
    WorkStarted,
)
from projections import work
from projections.cluster import NodeInfo
from services.leader import queue
from services.leader.supervision import (
    FailAttempt,
    GiveUp,
    HandBack,
    assignable,
    supervise,
)
from services.leader.views import node_views, running_by_node, work_views
from tests.terms import TERM, decided

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SETTINGS = SchedulerSettings(max_attempts=2, progress_timeout_s=60.0)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def fold(events: list[Event]) -> work.WorkState:
    state = work.apply(work.WorkState(), TERM, 0)  # the term whose decisions these are, before seq 1
    for seq, event in enumerate(events, start=1):
        state = work.apply(state, decided(event), seq)
    return state


def added(ts: float = 0, target: str | None = None) -> WorkAdded:
    return WorkAdded(work_id="w1", work_type="selfplay", board_type="hex8", num_players=2, ts=at(ts), target_node=target)


def assigned(attempt: int, node: str, ts: float, deadline: float = 3600) -> WorkAssigned:
    return WorkAssigned(work_id="w1", node=node, attempt=attempt, deadline=at(deadline), ts=at(ts))


def decide(events: list[Event], now: float, alive: set[str]) -> list[object]:
    return supervise(fold(events).items.values(), at(now), frozenset(alive), SETTINGS)


def test_a_healthy_running_attempt_needs_nothing() -> None:
    events = [added(), assigned(1, "a", 1), WorkStarted(work_id="w1", node="a", attempt=1, ts=at(2))]
    assert decide(events, now=30, alive={"a"}) == []


def test_an_attempt_on_an_offline_node_is_handed_back_with_that_reason() -> None:
    # A node removed, restarted or cut off is no fault of the job: the attempt does not count.
    events = [added(), assigned(1, "a", 1)]
    [decision] = decide(events, now=5, alive={"b"})
    assert decision == HandBack(work_id="w1", node="a", attempt=1, reason="node a went offline")


def test_an_attempt_its_node_started_after_going_offline_is_not_handed_back() -> None:
    # A drain: the old leader assigned attempt 2 (seq 2) just before the node's goodbye was folded;
    # the restarted node starts it (seq 3) before its first heartbeat brings it online again.
    events = [added(), assigned(2, "a", 1), WorkStarted(work_id="w1", node="a", attempt=2, ts=at(3))]
    items = list(fold(events).items.values())
    assert supervise(items, at(5), frozenset(), SETTINGS, {"a": 2}) == []
    # Offline after its last report, or never heard of since it was assigned: lost.
    lost = HandBack(work_id="w1", node="a", attempt=2, reason="node a went offline")
    assert supervise(items, at(5), frozenset(), SETTINGS, {"a": 4}) == [lost]
    assert supervise(fold(events[:2]).items.values(), at(5), frozenset(), SETTINGS, {"a": 1}) == [lost]


def test_handed_back_attempts_never_use_up_max_attempts() -> None:
    events: list[Event] = [added()]
    for attempt in range(1, 6):
        events += [assigned(attempt, "a", attempt), WorkHandedBack(work_id="w1", node="a", attempt=attempt,
                                                                   reason="worker stopping", ts=at(attempt))]
    state = fold(events)
    item = state.items["w1"]
    assert (item.status, item.attempt, item.failures, item.handed_back) == (work.WorkStatus.PENDING, 5, 0, 5)
    assert decide(events, now=10, alive={"a"}) == []
    assert assignable(item, SETTINGS)
    # ... but a job that takes its node down every time does not loop forever
    bounded = SchedulerSettings(max_attempts=2, max_hand_backs=5)
    [decision] = supervise(state.items.values(), at(10), frozenset({"a"}), bounded)
    assert isinstance(decision, GiveUp) and decision.reason.startswith("gave up after 5 hand-backs (max_hand_backs 5)")
    assert not assignable(item, bounded)


def test_only_failed_attempts_count_towards_giving_up() -> None:
    events = [
        added(), assigned(1, "a", 1), WorkAttemptFailed(work_id="w1", node="a", attempt=1, reason="exit 1", ts=at(2)),
        assigned(2, "a", 3), WorkHandedBack(work_id="w1", node="a", attempt=2, reason="worker stopping", ts=at(4)),
        assigned(3, "b", 5), WorkAttemptFailed(work_id="w1", node="b", attempt=3, reason="exit 9", ts=at(6)),
    ]
    [decision] = decide(events[:5], now=5, alive={"a", "b"}) or [None]
    assert decision is None, "one failure and one hand-back: max_attempts 2 not reached"
    [decision] = decide(events, now=7, alive={"a", "b"})
    assert isinstance(decision, GiveUp) and decision.reason.startswith("gave up after 2 failed attempts")
    assert [o.attempt for o in decision.attempts] == [1, 3]


def test_an_attempt_past_its_deadline_fails() -> None:
    events = [added(), assigned(1, "a", 1, deadline=10), WorkStarted(work_id="w1", node="a", attempt=1, ts=at(9))]
    [decision] = decide(events, now=11, alive={"a"})
    assert isinstance(decision, FailAttempt) and "deadline" in decision.reason


def test_a_silent_attempt_fails_after_the_progress_timeout() -> None:
    events = [added(), assigned(1, "a", 1), WorkStarted(work_id="w1", node="a", attempt=1, ts=at(2))]
    assert decide(events, now=61, alive={"a"}) == []
    [decision] = decide(events, now=62, alive={"a"})
    assert isinstance(decision, FailAttempt) and "no start or progress" in decision.reason


def test_after_max_attempts_the_item_is_given_up_with_every_reason() -> None:
    events = [
        added(), assigned(1, "a", 1), WorkAttemptFailed(work_id="w1", node="a", attempt=1, reason="exit 1", ts=at(2)),
        assigned(2, "b", 3), WorkAttemptFailed(work_id="w1", node="b", attempt=2, reason="exit 9", ts=at(4)),
    ]
    [decision] = decide(events, now=5, alive={"a", "b"})
    assert isinstance(decision, GiveUp)
    assert decision.attempts == (AttemptOutcome(attempt=1, node="a", reason="exit 1"), AttemptOutcome(attempt=2, node="b", reason="exit 9"))
    assert "exit 9" in decision.reason


def test_a_failure_from_a_superseded_attempt_is_not_an_outcome() -> None:
    events = [added(), assigned(1, "a", 1), assigned(2, "b", 2), WorkAttemptFailed(work_id="w1", node="a", attempt=1, reason="late", ts=at(3))]
    assert fold(events).items["w1"].outcomes == ()
    state = queue.apply(queue.QueueState(), TERM, 0)
    for seq, event in enumerate(events, start=1):
        state = queue.apply(state, decided(event), seq)
    assert queue.expected_seq(state, "w1") == 4  # every event of the item counts for the expected sequence


def test_pending_items_become_views_with_their_target_and_nodes_with_their_load() -> None:
    [view] = work_views(fold([added(target="b")]).items.values(), SETTINGS)
    assert view.target_node == "b" and view.order == 1
    state = fold([added(), assigned(1, "a", 1)])
    nodes = [NodeInfo(node="a", alive=True), NodeInfo(node="z", alive=False)]
    [view_a] = node_views(nodes, None, running_by_node(state.items.values()), SETTINGS)
    assert (view_a.node, view_a.running, view_a.configured, view_a.max_parallel_jobs) == ("a", 1, False, 2)


def test_a_node_in_the_hosts_file_takes_its_listed_capacity_and_an_unlisted_one_is_unconfigured() -> None:
    hosts = HostsConfig(hosts={"gpu": HostEntry(role="training", gpu="RTX 5090 24GB", max_parallel_jobs=3)})
    nodes = [NodeInfo(node="gpu", alive=True), NodeInfo(node="laptop", alive=True)]
    gpu, laptop = node_views(nodes, hosts, {"gpu": 1}, SETTINGS)
    assert (gpu.configured, gpu.roles, gpu.vram_gb, gpu.max_parallel_jobs, gpu.running) == (True, ("training",), 24.0, 3, 1)
    assert (laptop.configured, laptop.max_parallel_jobs) == (False, SETTINGS.default_max_parallel_jobs)


# ---- a completion after its attempt ended ------------------------------------------------


def completed(attempt: int, node: str, ts: float) -> WorkCompleted:
    return WorkCompleted(work_id="w1", node=node, attempt=attempt, ts=at(ts))


def test_a_completion_after_a_hand_back_is_accepted_while_nothing_newer_started() -> None:
    handed = WorkHandedBack(work_id="w1", node="a", attempt=1, reason="node a went offline", ts=at(3))
    state = fold([added(), assigned(1, "a", 1), WorkStarted(work_id="w1", node="a", attempt=1, ts=at(2)), handed,
                     completed(1, "a", 4)])
    assert state.items["w1"].status is work.WorkStatus.COMPLETED and not state.anomalies
    # ... also when a newer attempt is assigned but has not started: the item is done, it need not run again
    state = fold([added(), assigned(1, "a", 1), handed, assigned(2, "b", 4), completed(1, "a", 5)])
    item = state.items["w1"]
    assert (item.status, item.node) == (work.WorkStatus.COMPLETED, "a")


def test_a_completion_after_a_timeout_is_accepted_even_when_the_item_was_given_up() -> None:
    timed_out = WorkAttemptFailed(work_id="w1", node="a", attempt=1, reason="deadline passed", ts=at(3))
    state = fold([added(), assigned(1, "a", 1), timed_out, WorkFailed(work_id="w1", reason="gave up", ts=at(8)), completed(1, "a", 9)])
    assert state.items["w1"].status is work.WorkStatus.COMPLETED


def test_a_late_completion_is_rejected_once_a_newer_attempt_started_or_the_item_was_cancelled() -> None:
    handed = WorkHandedBack(work_id="w1", node="a", attempt=1, reason="worker stopping", ts=at(3))
    started_b = WorkStarted(work_id="w1", node="b", attempt=2, ts=at(5))
    state = fold([added(), assigned(1, "a", 1), handed, assigned(2, "b", 4), started_b, completed(1, "a", 6)])
    assert state.items["w1"].status is work.WorkStatus.RUNNING
    assert "superseded attempt 1" in state.anomalies[-1].reason
    cancelled = WorkCancelled(work_id="w1", reason="operator", ts=at(4))
    state = fold([added(), assigned(1, "a", 1), handed, cancelled, completed(1, "a", 6)])
    assert state.items["w1"].status is work.WorkStatus.CANCELLED
    # a completion from a node that never held that attempt is not one
    state = fold([added(), assigned(1, "a", 1), handed, completed(1, "z", 6)])
    assert state.items["w1"].status is work.WorkStatus.PENDING

