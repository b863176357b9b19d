"""The worker's pure core: which assignments start, which events stop a job, recovery plans, result events."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from eventbus.events import (
    ArtifactRef,
    EvaluationComplete,
    Event,
    SelfplayComplete,
    TrainingComplete,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
    WorkHandedBack,
    WorkProgress,
    WorkStarted,
)
from projections.work import WorkItem, item_history
from services.worker.gpuidle import gpu_stuck_reason, next_idle_since
from services.worker.jobs import JobOutcome
from services.worker.outputs import BestModel
from services.worker.protocol import (
    AttemptKey,
    Claim,
    Claimed,
    Ignore,
    Refuse,
    Start,
    decide_assignment,
    decide_stops,
    parallel_jobs,
    recheck_hand_back,
    recheck_start,
)
from services.worker.records import JobRecord
from services.worker.recovery import ENDED_WHILE_DOWN, NEVER_STARTED, ORPHAN_KILLED, plan_recovery
from services.worker.results import outcome_events

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(hours=1)
ADDED = WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, num_games=2)


def assigned(attempt: int = 1, node: str = "n1", deadline: dt.datetime = LATER, epoch: int | None = 7) -> WorkAssigned:
    return WorkAssigned(work_id="w-1", node=node, attempt=attempt, deadline=deadline, epoch=epoch)


def logged(events: list[Event]) -> list[tuple[int, Event]]:
    """Events as the log holds them: (seq, event), from seq 1."""
    return list(enumerate(events, start=1))


def item_view(work_id: str, events: list[Event]) -> WorkItem | None:
    return item_history(work_id, logged(events))


def decide(assignment: WorkAssigned, history: list[Event], *, admitted: bool = True, running: list[AttemptKey] | None = None):
    return decide_assignment(assignment, "n1", admitted, logged(history), running or [], NOW)


def test_a_fresh_assignment_for_this_node_starts_with_its_work_item() -> None:
    a = assigned()
    assert decide(a, [ADDED, a]) == Start(assignment=a, item=ADDED)


def test_assignments_that_are_not_ours_to_run_are_ignored_with_the_reason() -> None:
    a = assigned()
    cases = {
        "assigned to n2": decide(assigned(node="n2"), [ADDED, assigned(node="n2")]),
        "stale epoch 7": decide(a, [ADDED, a], admitted=False),
        "already held by this worker": decide(a, [ADDED, a], running=[AttemptKey("w-1", 1)]),
        "item already cancelled": decide(a, [ADDED, a, WorkCancelled(work_id="w-1")]),
        "item already failed": decide(a, [ADDED, a, WorkFailed(work_id="w-1", reason="gave up")]),
        "superseded by attempt 2 on n2": decide(a, [ADDED, a, assigned(2, "n2")]),
        "attempt already ended": decide(a, [ADDED, a, WorkAttemptFailed(work_id="w-1", node="n1", attempt=1, reason="x")]),
        "attempt already started": decide(a, [ADDED, a, WorkStarted(work_id="w-1", node="n1", attempt=1)]),
        "deadline": decide(assigned(deadline=NOW), [ADDED, assigned(deadline=NOW)]),
        "a sync item": decide(a, [msgspec.structs.replace(ADDED, work_type="sync", target_node="n1"), a]),
    }
    for expected, decision in cases.items():
        assert isinstance(decision, Ignore) and decision.reason.startswith(expected), (expected, decision)


def test_an_assignment_of_an_item_never_added_is_refused_so_the_leader_hears_of_it() -> None:
    assert decide(assigned(), [assigned()]) == Refuse(reason="work item w-1 has no WORK_ADDED in the log")


def test_a_cancel_or_a_newer_attempt_stops_what_this_node_runs_of_that_item_only() -> None:
    running = [AttemptKey("w-1", 1), AttemptKey("w-2", 1)]
    [stop] = decide_stops(WorkCancelled(work_id="w-1", reason="by ops"), True, running)
    assert (stop.key, stop.reason, stop.hand_back) == (AttemptKey("w-1", 1), "cancelled: by ops", False)
    [stop] = decide_stops(assigned(2, "n2"), True, running)
    assert (stop.key, stop.reason) == (AttemptKey("w-1", 1), "superseded by attempt 2 on n2")
    assert stop.hand_back, "the item moved on: a superseded attempt is no failure of its job"
    assert decide_stops(assigned(1, "n1"), True, running) == []  # our own assignment, redelivered
    assert decide_stops(WorkCancelled(work_id="w-1"), False, running) == []  # a deposed leader's cancel


@given(st.lists(st.sampled_from(["added", "a1", "a2", "start1", "fail1", "done2", "cancel"]), max_size=8))
def test_a_start_only_ever_follows_a_history_in_which_the_attempt_is_the_newest_and_still_open(steps: list[str]) -> None:
    events: dict[str, Event] = {
        "added": ADDED, "a1": assigned(1), "a2": assigned(2, "n2"),
        "start1": WorkStarted(work_id="w-1", node="n1", attempt=1),
        "fail1": WorkAttemptFailed(work_id="w-1", node="n1", attempt=1, reason="x"),
        "done2": WorkCompleted(work_id="w-1", node="n2", attempt=2), "cancel": WorkCancelled(work_id="w-1"),
    }
    history = [events[s] for s in steps] + [assigned(1)]
    decision = decide(assigned(1), history)
    if isinstance(decision, Start):
        # Its history begins at its WORK_ADDED: what named the item before it existed, the work fold refuses.
        assert "added" in steps
        assert not {"a2", "start1", "fail1", "done2", "cancel"} & set(steps[steps.index("added"):])


def test_parallel_jobs_come_from_the_hosts_file_else_the_setting() -> None:
    assert (parallel_jobs(4, 2), parallel_jobs(None, 2), parallel_jobs(0, 2)) == (4, 2, 2)


def record(pid: int | None = 42, pending: list[Event] | None = None) -> JobRecord:
    return JobRecord(work_id="w-1", attempt=1, node="n1", pid=pid, create_time=1.0 if pid else None, pending=pending or [])


def test_recovery_kills_a_live_orphan_and_reports_every_left_job_unless_its_end_is_in_the_log() -> None:
    open_view = item_view("w-1", [ADDED, assigned()])
    ended_view = item_view("w-1", [ADDED, assigned(), WorkCompleted(work_id="w-1", node="n1", attempt=1)])
    alive = plan_recovery(record(), True, open_view)
    assert all(isinstance(e, WorkHandedBack) for e in alive.events), "a worker restart is a hand-back, not a failure"
    assert alive.kill and [e.reason for e in alive.events] == [ORPHAN_KILLED]  # type: ignore[attr-defined]
    assert [e.reason for e in plan_recovery(record(), False, open_view).events] == [ENDED_WHILE_DOWN]  # type: ignore[attr-defined]
    assert [e.reason for e in plan_recovery(record(None), False, open_view).events] == [NEVER_STARTED]  # type: ignore[attr-defined]
    assert plan_recovery(record(), False, ended_view).events == []
    handed_view = item_view("w-1", [ADDED, assigned(), WorkHandedBack(work_id="w-1", node="n1", attempt=1, reason="r")])
    assert plan_recovery(record(), False, handed_view).events == [], "a hand-back settles the attempt"
    done = WorkCompleted(work_id="w-1", node="n1", attempt=1, id="n1:abc")
    assert plan_recovery(record(pending=[done]), False, open_view).events == [done]
    assert plan_recovery(record(pending=[done]), False, ended_view).events == []


def test_recovery_drops_an_unpublished_end_once_a_newer_attempt_of_the_item_started() -> None:
    done = WorkCompleted(work_id="w-1", node="n1", attempt=1, id="n1:abc")
    newer = item_view("w-1", [ADDED, assigned(), WorkStarted(work_id="w-1", node="n1", attempt=1), assigned(2, "n2"),
                              WorkStarted(work_id="w-1", node="n2", attempt=2)])
    plan = plan_recovery(record(pending=[done]), False, newer)
    assert plan.events == [] and "attempt 2" in plan.summary
    assigned_only = item_view("w-1", [ADDED, assigned(), assigned(2, "n2")])  # not started yet: a late completion still counts
    assert plan_recovery(record(pending=[done]), False, assigned_only).events == [done]


def outcome(**fields: object) -> JobOutcome:
    values: dict[str, object] = {"exit_code": 0, "stop_reason": None, "stderr_tail": "", "duration_s": 1.5}
    values.update(fields)
    return JobOutcome(**values)  # type: ignore[arg-type]


KEY = AttemptKey("w-1", 2)
NPZ = ArtifactRef(path="/d/out/games.npz", size_bytes=10, sha256="ab" * 32, node="n1")


def test_a_selfplay_result_becomes_selfplay_complete_with_the_workers_own_hash_then_work_completed() -> None:
    result = {"kind": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": 2, "num_samples": 40,
              "path": "/d/out/games.npz", "size_bytes": 10, "sha256": "wrong", "model": "none"}
    sp, done = outcome_events(ADDED, KEY, "n1", outcome(result=result), [NPZ])
    assert isinstance(sp, SelfplayComplete) and isinstance(done, WorkCompleted)
    assert (sp.batch_id, sp.num_games, sp.num_samples, sp.data, sp.model_id) == ("w-1-a2", 2, 40, NPZ, None)
    assert (done.attempt, done.exit_code, done.duration_s, done.outputs) == (2, 0, 1.5, [NPZ])


def test_a_job_that_played_the_best_model_names_it_by_its_id() -> None:
    best = BestModel(path=Path("/m/versions/hex8_2p/best-7.pth"), model_id="best-7")
    result = {"kind": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": 2, "path": "/d/out/games.npz",
              "model": "/m/versions/hex8_2p/best-7.pth"}
    sp, _ = outcome_events(ADDED, KEY, "n1", outcome(result=result), [NPZ], best)
    assert isinstance(sp, SelfplayComplete) and sp.model_id == "best-7"
    other = {**result, "model": "/elsewhere/trial.pth"}
    sp, _ = outcome_events(ADDED, KEY, "n1", outcome(result=other), [NPZ], best)
    assert isinstance(sp, SelfplayComplete) and sp.model_id == "trial"


def test_training_and_evaluation_results_become_their_domain_events() -> None:
    item = WorkAdded(work_id="w-1", work_type="training", board_type="hex8", num_players=2, params={"input_batches": "b1,b2"})
    ckpt = ArtifactRef(path="/d/out/candidate.pth", size_bytes=5, sha256="cd" * 32, node="n1")
    training = {"kind": "training", "board_type": "hex8", "num_players": 2, "path": ckpt.path, "metrics": {"policy_loss": 1.2},
                "input_batches": ["/d/a.npz"], "parent": "/m/ringrift_best_hex8_2p.pth"}
    model, _ = outcome_events(item, KEY, "n1", outcome(result=training), [ckpt])
    assert isinstance(model, TrainingComplete)
    assert (model.model_id, model.checkpoint, model.input_batches, model.parent_model, model.metrics) == (
        "hex8_2p-" + "cd" * 6, ckpt, ["b1", "b2"], "ringrift_best_hex8_2p", {"policy_loss": 1.2})
    match = {"games": 4, "wins": 3, "losses": 1, "draws": 0, "win_rate": 0.75, "elo_diff": 190.8}
    evaluation = {"kind": "evaluation", "board_type": "hex8", "num_players": 2, "candidate": "/m/cand7.pth",
                  "best": "none", "vs_random": match, "vs_best": None}
    vs_random, done = outcome_events(item, KEY, "n1", outcome(result=evaluation), [])
    assert isinstance(vs_random, EvaluationComplete) and isinstance(done, WorkCompleted)
    assert (vs_random.model_id, vs_random.opponent, vs_random.wins, vs_random.win_rate, vs_random.elo) == ("cand7", "random", 3, 0.75, 190.8)


def test_failures_and_unreadable_results_end_the_attempt_as_failed_and_no_result_is_a_plain_completion() -> None:
    [failed] = outcome_events(ADDED, KEY, "n1", outcome(exit_code=3, stderr_tail="boom"), [])
    assert isinstance(failed, WorkAttemptFailed) and (failed.reason, failed.exit_code, failed.stderr_tail) == ("exited with status 3", 3, "boom")
    [stopped] = outcome_events(ADDED, KEY, "n1", outcome(exit_code=-15, stop_reason="cancelled"), [])
    assert isinstance(stopped, WorkAttemptFailed) and stopped.reason == "cancelled"
    [bad] = outcome_events(ADDED, KEY, "n1", outcome(result={"kind": "selfplay"}), [])
    assert isinstance(bad, WorkAttemptFailed) and bad.reason.startswith("bad result line: Object missing required field")
    [plain] = outcome_events(ADDED, KEY, "n1", outcome(), [NPZ])
    assert isinstance(plain, WorkCompleted) and plain.outputs == [NPZ]


def test_a_gpu_counts_as_idle_only_while_every_gpu_reads_zero_and_only_since_the_job_started() -> None:
    assert next_idle_since(None, [0.0, 0.0], 10.0) == 10.0
    assert next_idle_since(10.0, [0.0], 20.0) == 10.0
    assert next_idle_since(10.0, [0.0, 3.0], 20.0) is None
    assert next_idle_since(10.0, [None], 20.0) is None and next_idle_since(None, [], 20.0) is None
    assert gpu_stuck_reason(10.0, job_started=50.0, now=600.0, stuck_after_s=600) is None
    reason = gpu_stuck_reason(10.0, job_started=5.0, now=620.0, stuck_after_s=600)
    assert reason is not None and reason.startswith("stuck: GPU idle")


def attempt_2_history(*after: Event) -> tuple[WorkStarted, WorkAssigned, list[tuple[int, Event]]]:
    """Attempt 1 started on n1 and was handed back, attempt 2 assigned to n1 (seq 5), then `after` (seq 6 ...)."""
    a2 = assigned(2)
    before: list[Event] = [ADDED, assigned(1), WorkStarted(work_id="w-1", node="n1", attempt=1),
                           WorkHandedBack(work_id="w-1", node="n1", attempt=1, reason="node offline"), a2]
    started = WorkStarted(work_id="w-1", node="n1", attempt=2, pid=42, id="n1-started-2")
    return started, a2, list(enumerate([*before, *after], start=1))


def test_a_refused_start_is_dropped_once_the_item_completed_was_cancelled_or_moved_on() -> None:
    late = WorkCompleted(work_id="w-1", node="n1", attempt=1)
    cases = {
        "item already completed": late,
        "item already cancelled": WorkCancelled(work_id="w-1"),
        "superseded by attempt 3 on n2": assigned(3, "n2"),
    }
    for expected, event in cases.items():
        started, a2, history = attempt_2_history(event)
        verdict = recheck_start(started, a2, history, [AttemptKey("w-1", 2)], NOW)
        assert isinstance(verdict, Ignore) and verdict.reason.startswith(expected), (expected, verdict)


def test_a_refused_start_is_tried_again_after_the_newest_event_when_only_older_attempts_reported() -> None:
    progress = WorkProgress(work_id="w-1", node="n1", attempt=1, fraction=0.5)
    started, a2, history = attempt_2_history(progress, WorkHandedBack(work_id="w-1", node="n1", attempt=1, reason="x"))
    # The worker holds attempt 2 itself while it asks: that is no reason to ignore it.
    assert recheck_start(started, a2, history, [AttemptKey("w-1", 2), AttemptKey("w-9", 1)], NOW) == Claim(seq=7)


def test_a_refused_retry_finds_its_own_start_stored_by_the_try_whose_ack_was_lost() -> None:
    started, a2, history = attempt_2_history()
    history.append((6, started))
    assert recheck_start(started, a2, history, [AttemptKey("w-1", 2)], NOW) == Claimed(seq=6)
    # Another process's start of the same attempt is not ours: ignored as before.
    other = msgspec.structs.replace(started, id="n1-earlier-process")
    assert isinstance(recheck_start(started, a2, [*history[:-1], (6, other)], [], NOW), Ignore)


def test_a_refused_hand_back_is_dropped_once_the_log_ends_the_attempt_else_tried_again_after_the_newest_event() -> None:
    # A drain: the agent's goodbye reached the leader, which handed attempt 1 back for the node
    # gone offline, while the worker was still stopping the job. A second hand-back must not follow.
    running = [ADDED, assigned(1), WorkStarted(work_id="w-1", node="n1", attempt=1, pid=42),
               WorkProgress(work_id="w-1", node="n1", attempt=1, fraction=0.1)]
    key = AttemptKey("w-1", 1)
    leaders = WorkHandedBack(work_id="w-1", node="n1", attempt=1, reason="node n1 went offline", epoch=7)
    verdict = recheck_hand_back(key, "n1", logged([*running, leaders]))
    assert isinstance(verdict, Ignore) and verdict.reason == "the log already ends the attempt", verdict
    failed = WorkAttemptFailed(work_id="w-1", node="n1", attempt=1, reason="no progress for 900s")
    assert isinstance(recheck_hand_back(key, "n1", logged([*running, failed])), Ignore)
    # Ended, assigned again and started on another node: a newer attempt runs.
    moved = [*running, leaders, assigned(2, "n2"), WorkStarted(work_id="w-1", node="n2", attempt=2, pid=7)]
    assert isinstance(recheck_hand_back(key, "n1", logged(moved)), Ignore)
    # Only a report of its own whose ack was lost came in between: try again, fenced after it.
    late_progress = WorkProgress(work_id="w-1", node="n1", attempt=1, fraction=0.2)
    assert recheck_hand_back(key, "n1", logged([*running, late_progress])) == Claim(seq=5)
