"""The scheduling core without a server: the queue fold and one round's decisions, against random worlds.

A simulated world (nodes going offline and back, workers starting, failing, finishing, hanging,
reporting late from superseded attempts, operators cancelling) is driven by hypothesis; the
leader's rounds are the pure functions the assigner runs. Whatever happens, the log never shows
two live attempts of an item, attempts count up by one, an item completes at most once, and
once the world settles every item ends.
"""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from config.sections.scheduler import SchedulerSettings
from eventbus.events import (
    Event,
    HostOffline,
    HostOnline,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
    WorkProgress,
    WorkStarted,
    WorkUnschedulable,
)
from projections import work
from projections.snapshot import decode_snapshot, encode_snapshot
from services.leader import queue
from services.leader.decisions import Conditional, assignment_round, supervision_round
from tests.scheduler_harness import attempt_violations
from tests.terms import TERM, decided

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SETTINGS = SchedulerSettings(max_attempts=3, progress_timeout_s=100.0, default_max_parallel_jobs=2,
                             attempt_deadline_s={"selfplay": 400.0})
NODES = ("a", "b", "c")
ITEMS = tuple(f"w{i}" for i in range(6))


class World:
    """The log, and the queue the leader folds from it; appends check the item's expected sequence as JetStream does."""

    def __init__(self) -> None:
        self.log: list[Event] = []
        self.state = queue.QueueState()
        self.now = T0
        self.append(TERM)  # the leader's own election: its decisions carry its epoch

    def append(self, event: Event) -> None:
        event = decided(event if event.ts is not None else _at(event, self.now))
        self.log.append(event)
        self.state = queue.apply(self.state, event, len(self.log))

    def append_if(self, decision: Conditional) -> bool:
        """Append a decision if its item is still at the expected sequence (else: a concurrency conflict)."""
        if queue.expected_seq(self.state, decision.work_id) != decision.expected:
            return False
        self.append(decision.event)
        return True

    def leader_round(self) -> None:
        """What the assigner's tick does: supervision first, then assignments on the state that saw it."""
        for decision in supervision_round(self.state, self.now, SETTINGS):
            self.append_if(decision)
        for decision in assignment_round(self.state, self.now, None, SETTINGS):
            self.append_if(decision)

    def item(self, work_id: str) -> work.WorkItem | None:
        return self.state.work.items.get(work_id)


def _at(event: Event, now: dt.datetime) -> Event:
    return msgspec.structs.replace(event, ts=now)


def worker_act(world: World, work_id: str, what: str) -> None:
    """A worker's report on the item's current attempt (or, for "stale", on an older one)."""
    item = world.item(work_id)
    if item is None or item.node is None or item.attempt == 0:
        return
    node, attempt = item.node, item.attempt
    if what == "stale":
        if attempt > 1:
            world.append(WorkCompleted(work_id=work_id, node="ghost", attempt=attempt - 1))
        return
    if item.status not in work.ACTIVE:
        return
    if what == "start" and item.status is work.WorkStatus.ASSIGNED:
        world.append(WorkStarted(work_id=work_id, node=node, attempt=attempt))
    elif what == "complete":
        world.append(WorkCompleted(work_id=work_id, node=node, attempt=attempt))
    elif what == "fail":
        world.append(WorkAttemptFailed(work_id=work_id, node=node, attempt=attempt, reason=f"exit 1 on {node}"))


step = st.one_of(
    st.tuples(st.just("round")),
    st.tuples(st.just("worker"), st.sampled_from(ITEMS), st.sampled_from(["start", "complete", "fail", "stale"])),
    st.tuples(st.just("offline"), st.sampled_from(NODES)),
    st.tuples(st.just("online"), st.sampled_from(NODES)),
    st.tuples(st.just("cancel"), st.sampled_from(ITEMS)),
    st.tuples(st.just("wait"), st.sampled_from([10.0, 150.0, 500.0])),
)


def play(world: World, action: tuple) -> None:
    kind = action[0]
    if kind == "round":
        world.leader_round()
    elif kind == "worker":
        worker_act(world, action[1], action[2])
    elif kind == "offline":
        world.append(HostOffline(node=action[1], reason="silent"))
    elif kind == "online":
        world.append(HostOnline(node=action[1]))
    elif kind == "cancel":
        item = world.item(action[1])
        if item is not None and item.status not in work.TERMINAL:
            world.append(WorkCancelled(work_id=action[1], reason="operator"))
    else:
        world.now += dt.timedelta(seconds=action[1])


def settle(world: World) -> None:
    """Every node back, workers finishing whatever they hold: a bounded number of rounds (and time) must end every item."""
    for node in NODES:
        world.append(HostOnline(node=node))
    for _ in range(len(ITEMS) * SETTINGS.max_attempts * 2):
        world.now += dt.timedelta(seconds=SETTINGS.retry_backoff.cap_s)  # failed items wait out their retry backoff
        world.leader_round()
        for work_id in ITEMS:
            worker_act(world, work_id, "start")
            worker_act(world, work_id, "complete")
        if all(i.status in work.TERMINAL for i in world.state.work.items.values()):
            return


@settings(max_examples=250, deadline=None)
@given(steps=st.lists(step, max_size=60))
def test_whatever_the_world_does_attempts_never_overlap_and_every_item_ends(steps: list[tuple]) -> None:
    world = World()
    for node in NODES[:2]:
        world.append(HostOnline(node=node))
    for work_id in ITEMS:
        world.append(WorkAdded(work_id=work_id, work_type="selfplay", board_type="hex8", num_players=2))
    for action in steps:
        play(world, action)
    settle(world)
    assert attempt_violations(world.log) == []
    items = world.state.work.items
    assert all(i.status in work.TERMINAL for i in items.values()), {i.work_id: i.status for i in items.values()}
    for failed in (e for e in world.log if isinstance(e, WorkFailed)):
        # every failed attempt is listed, in order, with its reason (handed-back ones do not count)
        numbers = [a.attempt for a in failed.attempts]
        assert len(numbers) == SETTINGS.max_attempts and numbers == sorted(set(numbers))
        assert all(a.reason for a in failed.attempts)
    assert all(i.failures <= SETTINGS.max_attempts for i in items.values())
    for work_id in ITEMS:  # every attempt beyond max_attempts was made possible by a hand-back
        assigned = [e.attempt for e in world.log if isinstance(e, WorkAssigned) and e.work_id == work_id]
        assert len(assigned) <= SETTINGS.max_attempts + items[work_id].handed_back


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(step, max_size=40), cut=st.integers(0, 200))
def test_a_rebuild_from_any_point_equals_the_live_queue_and_tracks_each_items_last_sequence(steps: list[tuple], cut: int) -> None:
    world = World()
    for node in NODES:
        world.append(HostOnline(node=node))
    for work_id in ITEMS[:3]:
        world.append(WorkAdded(work_id=work_id, work_type="selfplay", board_type="hex8", num_players=2))
    for action in steps:
        play(world, action)
    resumed = queue.QueueState()
    for seq, event in enumerate(world.log[:cut], start=1):
        resumed = queue.apply(resumed, event, seq)
    # ... through a snapshot, as the next leader starts: saved at the cut, loaded, then the tail.
    loaded = decode_snapshot(queue.PROJECTION, encode_snapshot(queue.PROJECTION, resumed))
    assert loaded is not None and loaded.state == resumed
    resumed = loaded.state
    for seq, event in enumerate(world.log[cut:], start=cut + 1):
        resumed = queue.apply(resumed, event, seq)
    assert resumed == world.state
    for work_id in ITEMS[:3]:  # the expected-sequence precondition is the item's newest event, applied or not
        newest = max(seq for seq, e in enumerate(world.log, start=1) if getattr(e, "work_id", None) == work_id)
        assert queue.expected_seq(world.state, work_id) == newest


def test_a_decision_on_an_item_that_moved_on_is_refused() -> None:
    world = World()
    world.append(HostOnline(node="a"))
    world.append(WorkAdded(work_id="w0", work_type="selfplay", board_type="hex8", num_players=2))
    [decision] = assignment_round(world.state, world.now, None, SETTINGS)
    world.append(WorkCancelled(work_id="w0", reason="operator"))  # lands between deciding and appending
    assert world.append_if(decision) is False
    assert assignment_round(world.state, world.now, None, SETTINGS) == []


def test_an_event_that_moves_no_index_leaves_the_index_maps_as_they_were() -> None:
    # The fold runs twice per assigned item on the leader's hot path: a map written with the value
    # it already holds is a copy for nothing, so an event that changes no index writes none.
    world = World()
    world.append(HostOnline(node="a"))
    world.append(WorkAdded(work_id="w0", work_type="selfplay", board_type="hex8", num_players=2))
    pending = world.state.pending
    world.append(WorkUnschedulable(work_id="w0", reason="needs a GPU"))  # still pending, same attempt
    assert world.state.pending is pending and dict(pending.items()) == {"w0": 0}
    world.append(WorkAssigned(work_id="w0", node="a", attempt=1, deadline=T0))
    world.append(WorkStarted(work_id="w0", node="a", attempt=1))
    before = world.state
    world.append(WorkProgress(work_id="w0", node="a", attempt=1, fraction=0.5))
    after = world.state
    assert (after.pending, after.active, after.load) == (before.pending, before.active, before.load)
    assert all(a is b for a, b in zip((after.pending, after.active, after.load), (before.pending, before.active, before.load)))
    assert queue.expected_seq(after, "w0") == len(world.log)  # the item's sequence still moves
