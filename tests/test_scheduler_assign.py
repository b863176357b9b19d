"""The assignment loop on a real nats-server: capacity, completion, node loss, superseded attempts, giving up, cancel."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cli.commands.work import not_applied
from config.sections.backoff import Backoff
from config.sections.scheduler import SchedulerSettings
from eventbus.connection import Bus
from eventbus.events import (
    Event,
    HostOffline,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
    WorkHandedBack,
)
from eventbus.history import events
from eventbus.integrity import decode_on
from eventbus.publisher import Publisher
from projections import work
from services.leader import assigner
from tests.scheduler_harness import (
    add_items,
    all_in,
    attempt_violations,
    elected,
    online,
    read_log,
    run_scheduler,
    simulated_worker,
    state_of,
    stop,
)
from tests.terms import as_term

pytestmark = pytest.mark.timeout(60)


async def test_items_are_assigned_within_capacity_and_completed(bus: Bus, eventually: Any) -> None:
    pub = Publisher(bus)
    await online(pub, "n1", "n2")
    held: list[WorkAssigned] = []
    workers = [asyncio.create_task(simulated_worker(bus, n, lambda job: held.append(job) or "hang")) for n in ("n1", "n2")]
    scheduler = await run_scheduler(bus, SchedulerSettings(default_max_parallel_jobs=2))
    try:
        ids = await add_items(pub, 6)
        await eventually(lambda: len(held) == 4, timeout=10, message="four items assigned (2 nodes x 2 slots)")
        assert sorted(sum(1 for j in held if j.node == n) for n in ("n1", "n2")) == [2, 2]
        for job in held:  # finish the held ones; the rest follows into the freed slots
            await pub.publish(WorkCompleted(work_id=job.work_id, node=job.node, attempt=job.attempt))
        await eventually(lambda: len(held) == 6, timeout=10, message="the last two assigned once slots freed")
        for job in held[4:]:
            await pub.publish(WorkCompleted(work_id=job.work_id, node=job.node, attempt=job.attempt))
        await eventually(lambda: all_in(bus, work.WorkStatus.COMPLETED, ids), timeout=10)
    finally:
        await stop(scheduler, *workers)
    assert attempt_violations(await read_log(bus)) == []


async def test_a_node_that_completes_after_going_offline_is_accepted_while_nothing_newer_started(bus: Bus, eventually: Any) -> None:
    # Credentials rotated, or the node cut off for a while: the leader hands its attempt back, no
    # other node can take the item, and the job finishes anyway.
    pub = Publisher(bus)
    await online(pub, "cut")
    held: list[WorkAssigned] = []
    cut = asyncio.create_task(simulated_worker(bus, "cut", lambda job: held.append(job) or "hang"))
    scheduler = await run_scheduler(bus, SchedulerSettings())
    try:
        [item] = await add_items(pub, 1)
        await eventually(lambda: len(held) == 1, timeout=10, message="assigned to the only node")
        await as_term(pub, HostOffline(node="cut", reason="no heartbeat for 16.0s (limit 15s)"))
        await eventually(lambda: all_in(bus, work.WorkStatus.PENDING, [item]), timeout=10, message="handed back")
        await pub.publish(WorkCompleted(work_id=item, node="cut", attempt=1))
        await eventually(lambda: all_in(bus, work.WorkStatus.COMPLETED, [item]), timeout=10, message="accepted late")
        state = await state_of(bus)
        log = await read_log(bus)
    finally:
        await stop(scheduler, cut)
    done = state.items[item]
    assert (done.status, done.failures, done.handed_back, done.node) == (work.WorkStatus.COMPLETED, 0, 1, "cut")
    assert not state.anomalies and attempt_violations(log) == []
    assert [type(e) for e in log if isinstance(e, (WorkHandedBack, WorkAttemptFailed, WorkCompleted))] == [WorkHandedBack, WorkCompleted]


async def test_an_offline_node_hands_its_attempt_to_another_node_and_its_late_completion_is_an_anomaly(bus: Bus, eventually: Any) -> None:
    pub = Publisher(bus)
    await online(pub, "lost")
    held: list[WorkAssigned] = []
    lost = asyncio.create_task(simulated_worker(bus, "lost", lambda job: held.append(job) or "hang"))
    scheduler = await run_scheduler(bus, SchedulerSettings())
    try:
        [item] = await add_items(pub, 1)
        await eventually(lambda: len(held) == 1, timeout=10, message="assigned to the only node")
        survivor = asyncio.create_task(simulated_worker(bus, "survivor", lambda job: "complete"))
        await online(pub, "survivor")
        await as_term(pub, HostOffline(node="lost", reason="silent"))
        await eventually(lambda: all_in(bus, work.WorkStatus.COMPLETED, [item]), timeout=10)
        await pub.publish(WorkCompleted(work_id=item, node="lost", attempt=1))  # the superseded attempt reports late
        state = await state_of(bus)
        log = await read_log(bus)
    finally:
        await stop(scheduler, lost, survivor)
    done = state.items[item]
    assert (done.attempt, done.node) == (2, "survivor")
    assert any("superseded attempt 1" in a.reason for a in state.anomalies)
    handed = [e for e in log if isinstance(e, WorkHandedBack)]
    assert [(e.attempt, e.reason) for e in handed] == [(1, "node lost went offline")]
    assert not [e for e in log if isinstance(e, WorkAttemptFailed)], "a node going offline costs no attempt"
    assert attempt_violations(log) == []
    late = [seq for seq, e in enumerate(log, start=1) if isinstance(e, WorkCompleted) and e.node == "lost"]
    assert list(not_applied([(seq, log[seq - 1]) for seq in range(1, len(log) + 1)]).keys()) == late  # `rr work show` marks it


async def test_after_max_attempts_the_item_fails_with_each_reason(bus: Bus, eventually: Any) -> None:
    pub = Publisher(bus)
    await online(pub, "flaky")
    worker = asyncio.create_task(simulated_worker(bus, "flaky", lambda job: "fail"))
    scheduler = await run_scheduler(bus, SchedulerSettings(max_attempts=3, retry_backoff=Backoff(base_s=0.1, cap_s=0.2)))
    try:
        [item] = await add_items(pub, 1)
        await eventually(lambda: all_in(bus, work.WorkStatus.FAILED, [item]), timeout=15)
    finally:
        await stop(scheduler, worker)
    [failed] = [e for e in await read_log(bus) if isinstance(e, WorkFailed)]
    assert [(a.attempt, a.reason) for a in failed.attempts] == [(n, "exit 1 on flaky") for n in (1, 2, 3)]


async def test_a_cancelled_item_is_never_assigned_and_a_silent_attempt_is_retried(bus: Bus, eventually: Any) -> None:
    pub = Publisher(bus)
    await pub.publish(WorkAdded(work_id="w-cancelled", work_type="selfplay", board_type="hex8", num_players=2))
    await pub.publish(WorkCancelled(work_id="w-cancelled", reason="not needed"))
    await online(pub, "n1")
    calls: list[WorkAssigned] = []
    # The first attempt stays silent (no WORK_STARTED): after progress_timeout_s it is failed and retried.
    worker = asyncio.create_task(simulated_worker(bus, "n1", lambda job: calls.append(job) or ("hang" if job.attempt == 1 else "complete")))
    scheduler = await run_scheduler(bus, SchedulerSettings(progress_timeout_s=1.0))
    try:
        [item] = await add_items(pub, 1)
        await eventually(lambda: all_in(bus, work.WorkStatus.COMPLETED, [item]), timeout=15)
    finally:
        await stop(scheduler, worker)
    state = await state_of(bus)
    assert state.items["w-cancelled"].status is work.WorkStatus.CANCELLED
    assert [c.work_id for c in calls] == [item, item]


async def test_cancelling_a_running_item_stops_its_attempt_and_it_is_never_retried(bus: Bus, eventually: Any) -> None:
    pub = Publisher(bus)
    await online(pub, "n1")
    worker = asyncio.create_task(simulated_worker(bus, "n1", lambda job: "run"))  # starts, runs until stopped
    scheduler = await run_scheduler(bus, SchedulerSettings(progress_timeout_s=1.0, max_attempts=3))
    try:
        [item] = await add_items(pub, 1)
        await eventually(lambda: all_in(bus, work.WorkStatus.RUNNING, [item]), message="running")
        await pub.publish(WorkCancelled(work_id=item, reason="operator: wrong board"))
        await eventually(lambda: _attempt_failures(bus), message="the worker stopped the cancelled attempt")
        await asyncio.sleep(1.5)  # past progress_timeout_s: supervision must leave a cancelled item alone
        log = await read_log(bus)
    finally:
        await stop(scheduler, worker)
    assert [(e.attempt, e.reason) for e in log if isinstance(e, WorkAttemptFailed)] == [(1, "cancelled")]
    assert [e.attempt for e in log if isinstance(e, WorkAssigned)] == [1]
    item_state = (await state_of(bus)).items[item]
    assert (item_state.status, item_state.reason) == (work.WorkStatus.CANCELLED, "operator: wrong board")


async def _attempt_failures(bus: Bus) -> list[WorkAttemptFailed]:
    return [e for e in await read_log(bus) if isinstance(e, WorkAttemptFailed)]


async def test_an_attempt_past_its_deadline_is_failed_and_retried(bus: Bus, eventually: Any) -> None:
    pub = Publisher(bus)
    await online(pub, "n1")
    worker = asyncio.create_task(simulated_worker(bus, "n1", lambda job: "run" if job.attempt == 1 else "complete"))
    settings = SchedulerSettings(attempt_deadline_s={"selfplay": 0.5}, progress_timeout_s=60.0)
    scheduler = await run_scheduler(bus, settings)
    try:
        [item] = await add_items(pub, 1)
        await eventually(lambda: all_in(bus, work.WorkStatus.COMPLETED, [item]), timeout=15)
    finally:
        await stop(scheduler, worker)
    log = await read_log(bus)
    [failed] = [e for e in log if isinstance(e, WorkAttemptFailed)]
    assert failed.attempt == 1 and "deadline" in failed.reason
    assert attempt_violations(log) == []


async def test_two_acting_leaders_never_assign_the_same_attempt_twice(bus: Bus, eventually: Any) -> None:
    """A split brain (both terms' clocks say they may act): the server stores only the newest election's decisions."""
    pub = Publisher(bus)
    old_fence = await elected(pub, 1)
    await online(pub, "n1", "n2", epoch=1)
    workers = [asyncio.create_task(simulated_worker(bus, n, lambda job: "complete")) for n in ("n1", "n2")]
    settings = SchedulerSettings(default_max_parallel_jobs=8)
    old = await run_scheduler(bus, settings, epoch=1, fence=old_fence)
    try:
        ids = await add_items(pub, 100)
        await eventually(lambda: _assigned_by(bus, 1), timeout=30, message="the first leader assigns")
        new_fence = await elected(pub, 2)
        new = await run_scheduler(bus, settings, epoch=2, fence=new_fence)
        await eventually(lambda: all_in(bus, work.WorkStatus.COMPLETED, ids), timeout=30)
        await asyncio.wait_for(old, timeout=10)  # fenced out: its loop ended on the first refused decision
    finally:
        await stop(old, new, *workers)
    stored = [(seq, e) async for seq, e in events(bus) if isinstance(e, Event)]
    assert attempt_violations([e for _, e in stored]) == []
    assert all(e.attempt == 1 for _, e in stored if isinstance(e, WorkAssigned))
    assert [seq for seq, e in stored if seq > new_fence.seq and e.epoch == 1] == []


async def _assigned_by(bus: Bus, epoch: int) -> bool:
    return any(isinstance(e, WorkAssigned) and e.epoch == epoch for e in await read_log(bus))


async def test_a_new_leader_starts_from_the_last_leaders_snapshot_and_folds_the_same_queue(bus: Bus, eventually: Any) -> None:
    from cluster.leadership.term import Term
    from config.settings import RrConfig
    from eventbus.events import Event
    from eventbus.history import last_sequence, replay
    from servicekit.options import CommonOptions
    from servicekit.runtime import ServiceContext
    from services.leader import queue
    from services.leader.assigner import Assigner

    def leader(epoch: int, snapshot_every: int) -> Assigner:
        settings = SchedulerSettings(default_max_parallel_jobs=2, snapshot_every_events=snapshot_every)
        ctx = ServiceContext("scheduler", bus, RrConfig(scheduler=settings), CommonOptions(nats_url=None, node_id="sched", config_path=None))
        return Assigner(ctx, Term("scheduler", "sched", epoch, None, ctx.publisher, lambda: True), None)

    pub = Publisher(bus)
    await online(pub, "n1")
    await add_items(pub, 5)
    first = leader(1, snapshot_every=4)
    task = asyncio.create_task(first.run())
    try:
        await eventually(lambda: first.snapshot_seq >= 6, timeout=15, message="a snapshot saved")
    finally:
        await stop(task)
    saved = first.snapshot_seq
    await pub.publish(WorkCompleted(work_id=next(iter(first.state.active.keys())), node="n1", attempt=1))  # the tail
    second = leader(2, snapshot_every=0)  # saves none: its snapshot_seq can only come from loading
    task = asyncio.create_task(second.run())
    try:
        end = await last_sequence(bus)
        await eventually(lambda: second.state.last_seq >= end, timeout=15, message="the tail folded")
        assert second.snapshot_seq == saved  # started from the snapshot, not from sequence 1
    finally:
        await stop(task)
    records: list = []
    await replay(bus, records.append, end_seq=second.state.last_seq)
    full = queue.QueueState()
    for record in records:
        event = decode_on(record.subject, record.data, record.headers)
        if isinstance(event, Event):
            full = queue.apply(full, event, record.seq)
    assert second.state == full


async def test_new_items_are_assigned_without_sweeping_every_open_attempt_but_a_lost_node_still_is(
    bus: Bus, eventually: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sweep costs every open item; a round woken by WORK_ADDED alone cannot owe one, so a stream of
    # requests must not pay it per request. A node going offline still makes one due at once, long
    # before the periodic sweep (assign_every_s) would come.
    sweeps: list[int] = []
    real = assigner.supervision_round
    monkeypatch.setattr(assigner, "supervision_round", lambda state, *a: sweeps.append(len(state.active)) or real(state, *a))
    pub = Publisher(bus)
    await online(pub, "n1")
    held: list[WorkAssigned] = []
    worker = asyncio.create_task(simulated_worker(bus, "n1", lambda job: held.append(job) or "hang"))
    scheduler = await run_scheduler(bus, SchedulerSettings(default_max_parallel_jobs=50, assign_every_s=60.0))
    try:
        await eventually(lambda: len(sweeps) >= 1, timeout=10, message="the first round sweeps")
        ids = []
        for n in range(15):
            ids += await add_items(pub, 1, prefix=f"one{n}")
            await eventually(lambda n=n: len(held) == n + 1, timeout=10, message=f"item {n} assigned")
        assert len(sweeps) <= 2, f"{len(sweeps)} sweeps for 15 added items"
        await as_term(pub, HostOffline(node="n1", reason="no heartbeat for 16.0s (limit 15s)"))
        await eventually(lambda: all_in(bus, work.WorkStatus.PENDING, ids), timeout=10, message="handed back at once")
    finally:
        await stop(scheduler, worker)


async def test_a_leader_stopped_while_a_round_publishes_ends_on_that_one_cancel(
    bus: Bus, eventually: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python 3.11's asyncio.wait_for, under the client's publish, returns the ack and drops a
    # cancellation that lands with it (the task still counts it as requested). The loop then went
    # on round after round, and the test stopping it (one cancel) waited forever.
    rounds = 0
    in_round = asyncio.Event()
    real = assigner.Assigner.tick

    async def tick_losing_a_cancel(self: assigner.Assigner, sweep: bool = True) -> None:
        nonlocal rounds
        await real(self, sweep)
        rounds += 1
        if rounds == 1:
            in_round.set()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.get_running_loop().create_future()  # the cancel arrives with the ack ...
            # ... and wait_for returns the ack instead

    monkeypatch.setattr(assigner.Assigner, "tick", tick_losing_a_cancel)
    scheduler = await run_scheduler(bus, SchedulerSettings(assign_every_s=0.1))
    await asyncio.wait_for(in_round.wait(), timeout=15)
    scheduler.cancel()
    done, _ = await asyncio.wait([scheduler], timeout=10)
    assert scheduler in done, f"the loop went on after its cancellation ({rounds} rounds)"
    await stop(scheduler)


async def test_an_assignment_read_back_on_a_node_not_alive_makes_the_next_round_sweep_and_none_settles_the_fold(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another term's decision can land on a node already gone: the next round sweeps (hands it back)
    # rather than waiting for the periodic sweep. Judging that when each decision is read back read
    # the fold's state, which settled its held-open maps (projections/openmap.py) once per assignment.
    from eventbus.events import utcnow
    from eventbus.history import replay
    from services.leader.queue import PROJECTION

    pub = Publisher(bus)
    await online(pub, "n1", epoch=1)
    ids = await add_items(pub, 100)
    deadline = utcnow()
    await as_term(pub, *(WorkAssigned(work_id=w, node="n1", attempt=1, deadline=deadline) for w in ids[:99]))
    settles: list[int] = []
    opening = PROJECTION.folding
    assert opening is not None
    leader = _idle_leader(bus)
    leader._queue._opening = lambda state: settles.append(1) or opening(state)
    await replay(bus, leader.on_record)
    assert len(leader.state.active) == 99 and len(settles) == 1, f"the fold was settled {len(settles)} times"
    assert not leader._holder_lost()
    await as_term(pub, WorkAssigned(work_id=ids[99], node="gone", attempt=1, deadline=deadline))
    await replay(bus, leader.on_record, start_seq=leader.state.last_seq + 1)
    assert leader._holder_lost()
    assert not leader._holder_lost()  # judged once


def _idle_leader(bus: Bus) -> assigner.Assigner:
    from cluster.leadership.term import Term
    from config.settings import RrConfig
    from servicekit.options import CommonOptions
    from servicekit.runtime import ServiceContext

    ctx = ServiceContext("scheduler", bus, RrConfig(), CommonOptions(nats_url=None, node_id="sched", config_path=None))
    return assigner.Assigner(ctx, Term("scheduler", "sched", 1, None, ctx.publisher, lambda: True), None)
