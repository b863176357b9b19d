"""The chaos checker: each violation in a small synthetic history is reported, a valid history never is, and a real log checks clean."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus.connection import Bus
from eventbus.events import (
    AttemptOutcome,
    Event,
    LeaderElected,
    ModelDistributed,
    ModelPromoted,
    SelfplayComplete,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
    WorkHandedBack,
    WorkStarted,
)
from eventbus.publisher import Publisher
from eventbus.subjects import ALL_EVENTS
from ops.chaos.check import LiveViews, judge, main, read_records
from ops.chaos.checker import KINDS, ClientRecord, DeadLetter, check, view_hashes, views
from projections import bundle
from projections.base import Folder
from projections.snapshot import decode_snapshot, encode_snapshot
from projections.work import TERMINAL
from servicekit.livefold import LiveFold

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DEADLINE = T0 + dt.timedelta(hours=1)


def added(work_id: str) -> WorkAdded:
    return WorkAdded(id=f"client:{work_id}", work_id=work_id, work_type="selfplay", board_type="hex8", num_players=2)


def assigned(work_id: str, attempt: int, node: str, epoch: int = 5) -> WorkAssigned:
    return WorkAssigned(id=f"lead:{work_id}:a{attempt}", work_id=work_id, node=node, attempt=attempt, deadline=DEADLINE, epoch=epoch)


def started(work_id: str, attempt: int, node: str) -> WorkStarted:
    return WorkStarted(work_id=work_id, node=node, attempt=attempt)


def completed(work_id: str, attempt: int, node: str) -> WorkCompleted:
    return WorkCompleted(work_id=work_id, node=node, attempt=attempt)


def elected(epoch: int, node: str = "n1", role: str = "scheduler") -> LeaderElected:
    return LeaderElected(role=role, node=node, epoch=epoch, source=node)  # a winner announces its own election


def logged(*events: Event) -> list[tuple[int, Event]]:
    return list(enumerate(events, start=1))


def acked(log: list[tuple[int, Event]]) -> list[ClientRecord]:
    return [ClientRecord(id=e.id, seq=seq) for seq, e in log if isinstance(e, WorkAdded)]


def kinds(log: list[tuple[int, Event]], **kwargs: object) -> dict[str, int]:
    report = check(log, acked(log), **kwargs)  # type: ignore[arg-type]
    return {k: n for k, n in report.by_kind.items() if n}


CLEAN = (elected(5), added("w1"), assigned("w1", 1, "n2"), started("w1", 1, "n2"), completed("w1", 1, "n2"))


def test_a_clean_history_reports_nothing_and_counts_every_kind() -> None:
    report = check(logged(*CLEAN), acked(logged(*CLEAN)))
    assert report.clean and report.violations == ()
    assert set(report.by_kind) == set(KINDS) and report.work_items == 1 and report.acknowledged == 1


def test_the_readme_explains_every_kind() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert [k for k in KINDS if f"`{k}`" not in readme] == [], "README.md, Checking a whole history: add a row per kind"


def test_an_acknowledged_event_missing_or_replaced_is_lost() -> None:
    log = logged(*CLEAN)
    records = [*acked(log), ClientRecord(id="client:w9", seq=42), ClientRecord(id="client:w8", seq=3)]
    report = check(log, records)
    assert report.by_kind["lost"] == 2
    assert {v.seq for v in report.violations} == {42, 3}


def test_an_acknowledged_item_without_a_terminal_state_is_unfinished() -> None:
    assert kinds(logged(elected(5), added("w1"), assigned("w1", 1, "n2"), started("w1", 1, "n2"))) == {"unfinished": 1}


def test_a_cancelled_item_is_finished() -> None:
    assert kinds(logged(added("w1"), WorkCancelled(work_id="w1", reason="operator"))) == {}


def test_a_failure_missing_an_attempts_reason_is_reported() -> None:
    history = (elected(5), added("w1"), assigned("w1", 1, "n2"), WorkAttemptFailed(work_id="w1", node="n2", attempt=1, reason="exit 1"))
    bare = WorkFailed(work_id="w1", reason="max attempts", attempts=[], epoch=5)
    full = WorkFailed(work_id="w1", reason="max attempts", attempts=[AttemptOutcome(attempt=1, node="n2", reason="exit 1")], epoch=5)
    assert kinds(logged(*history, bare)) == {"failed_without_reasons": 1}
    assert kinds(logged(*history, full)) == {}
    assert kinds(logged(*history, WorkFailed(work_id="w1", reason="", attempts=full.attempts, epoch=5))) == {"failed_without_reasons": 1}


def test_two_completions_of_one_item_are_a_duplicate() -> None:
    assert kinds(logged(*CLEAN, completed("w1", 1, "n2"))) == {"duplicate_applied": 1}


def test_a_failure_after_completion_is_a_duplicate_terminal() -> None:
    assert kinds(logged(*CLEAN, WorkFailed(work_id="w1", reason="max attempts", epoch=5))) == {"duplicate_applied": 1}


def test_a_completion_from_a_superseded_attempt_is_reported() -> None:
    history = (elected(5), added("w1"), assigned("w1", 1, "n2"), started("w1", 1, "n2"), assigned("w1", 2, "n3"), started("w1", 2, "n3"))
    assert kinds(logged(*history, completed("w1", 1, "n2"))) == {"superseded_completion": 1, "unfinished": 1}
    assert kinds(logged(*history, completed("w1", 2, "n3"))) == {}


def test_a_completion_after_cancel_is_superseded() -> None:
    history = (elected(5), added("w1"), assigned("w1", 1, "n2"), WorkCancelled(work_id="w1"), completed("w1", 1, "n2"))
    assert kinds(logged(*history)) == {"superseded_completion": 1}


def test_a_late_completion_of_a_handed_back_attempt_is_accepted_until_a_newer_one_starts() -> None:
    history = (elected(5), added("w1"), assigned("w1", 1, "n2"), WorkHandedBack(work_id="w1", node="n2", attempt=1, reason="stopped"),
               assigned("w1", 2, "n3"))
    assert kinds(logged(*history, completed("w1", 1, "n2"))) == {}
    assert kinds(logged(*history, started("w1", 2, "n3"), completed("w1", 1, "n2"))) == {"superseded_completion": 1, "unfinished": 1}
    # The newer attempt completed first: the handed-back one's late report is superseded, not a second application.
    finished = (*history, started("w1", 2, "n3"), completed("w1", 2, "n3"))
    assert kinds(logged(*finished, completed("w1", 1, "n2"))) == {"superseded_completion": 1}


def test_a_result_of_an_attempt_that_no_longer_counts_is_reported() -> None:
    def selfplay(attempt: int, node: str) -> SelfplayComplete:
        return SelfplayComplete(batch_id=f"b{attempt}{node}", work_id="w1", node=node, board_type="hex8", num_players=2, num_games=4,
                                attempt=attempt)

    history = (elected(5), added("w1"), assigned("w1", 1, "n2"), started("w1", 1, "n2"), selfplay(1, "n2"),
               assigned("w1", 2, "n3"), started("w1", 2, "n3"))
    assert kinds(logged(*history, selfplay(2, "n3"), completed("w1", 2, "n3"))) == {}  # the earlier result counted when stored
    assert kinds(logged(*history, selfplay(1, "n2"), completed("w1", 2, "n3"))) == {"superseded_result": 1}
    assert kinds(logged(*history, completed("w1", 2, "n3"), selfplay(2, "n3"))) == {}  # the completed attempt's own
    assert kinds(logged(*CLEAN, selfplay(2, "n3"))) == {"superseded_result": 1}  # after another attempt completed it
    assert kinds(logged(*CLEAN, msgspec.structs.replace(selfplay(1, "n2"), attempt=0))) == {}  # an older result names no attempt


def test_an_epoch_not_newer_than_its_roles_previous_is_reported() -> None:
    assert kinds(logged(elected(5, "n1"), elected(3, "n2"))) == {"epoch_not_increasing": 1}
    assert kinds(logged(elected(5, "n1"), elected(5, "n1"), elected(7, "n2"))) == {}  # a re-announcement is fine


def test_one_epoch_with_two_holders_is_reported() -> None:
    assert kinds(logged(elected(5, "n1"), elected(5, "n2"))) == {"epoch_two_holders": 1}
    assert kinds(logged(elected(5, "n1"), elected(5, "n1", role="distribution"))) == {"epoch_two_holders": 1}


def test_an_election_announced_by_another_node_is_not_believed() -> None:
    forged = LeaderElected(role="scheduler", node="n2", epoch=7, source="n3")
    assert kinds(logged(*CLEAN, LeaderElected(role="scheduler", node="n2", epoch=5, source="n3"))) == {}  # not a second holder
    assert kinds(logged(*CLEAN[:2], forged, *CLEAN[2:])) == {}  # epoch 5's decisions are not stale by a forgery


def test_a_decision_stored_after_its_successors_election_is_stale() -> None:
    history = (elected(5, "n1"), added("w1"), elected(7, "n2"), assigned("w1", 1, "n3", epoch=5))
    report = check(logged(*history), [])
    assert report.by_kind["stale_decision"] == 1
    assert report.violations[0].seq == 4 and "epoch 5" in report.violations[0].detail
    # the same decision before the successor's election is fine
    assert kinds(logged(elected(5, "n1"), added("w1"), assigned("w1", 1, "n3", epoch=5), elected(7, "n2"), started("w1", 1, "n3"),
                        completed("w1", 1, "n3"))) == {}


def test_a_decision_without_an_epoch_or_with_an_unnamed_one_is_unfenced_once_a_leader_was_elected() -> None:
    bare = assigned("w1", 1, "n2", epoch=None)  # type: ignore[arg-type]
    made_up = assigned("w1", 1, "n2", epoch=9)
    assert kinds(logged(added("w1"), bare, started("w1", 1, "n2"), completed("w1", 1, "n2"))) == {}  # before any election
    assert kinds(logged(elected(5), added("w1"), bare, started("w1", 1, "n2"), completed("w1", 1, "n2"))) == {"unfenced_decision": 1}
    assert kinds(logged(elected(5), added("w1"), made_up, started("w1", 1, "n2"), completed("w1", 1, "n2"))) == {"unfenced_decision": 1}
    # a worker's report is no leader decision: it carries no epoch
    assert check(logged(*CLEAN), []).by_kind["unfenced_decision"] == 0


def test_a_stale_decision_is_not_judged_twice_as_a_lifecycle_violation() -> None:
    history = (*CLEAN, elected(7, "n2"), WorkFailed(work_id="w1", reason="x", epoch=5))
    assert kinds(logged(*history)) == {"stale_decision": 1}


def test_an_install_must_match_its_promotions_sha256() -> None:
    promoted = ModelPromoted(model_id="m1", board_type="hex8", num_players=2, sha256="aa" * 32, epoch=5)
    good = ModelDistributed(model_id="m1", node="n2", sha256="aa" * 32)
    bad = ModelDistributed(model_id="m1", node="n3", sha256="bb" * 32)
    never = ModelDistributed(model_id="m2", node="n3", sha256="cc" * 32)
    assert kinds(logged(elected(5), promoted, good)) == {}
    assert kinds(logged(elected(5), promoted, good, bad, never)) == {"model_sha_mismatch": 2}


def test_a_view_loaded_from_its_snapshot_hashes_as_the_same_view_folded() -> None:
    # A loaded snapshot holds the maps read only by key as undecoded msgpack (wire.READ_BY_KEY):
    # the chaos run compares a live API's loaded bundle with a rebuild, and crashed on them.
    log = logged(*CLEAN)
    folded = bundle.fold_all_events(log)
    loaded = decode_snapshot(bundle.PROJECTION, encode_snapshot(bundle.PROJECTION, folded))
    assert loaded is not None
    assert view_hashes(loaded.state) == view_hashes(folded)


def test_views_that_differ_from_the_rebuild_are_reported() -> None:
    log = logged(*CLEAN)
    live = view_hashes(bundle.fold_all_events(log))
    assert kinds(log, live=live, rebuilt=view_hashes(bundle.fold_all_events(log))) == {}
    other = view_hashes(bundle.fold_all_events([*log[:-1], (len(log), completed("w1", 9, "n9"))]))  # same position, other item state
    report = check(log, [], live=live, rebuilt=other)
    assert [v.about for v in report.violations if v.kind == "projection_mismatch"] == ["work"]
    assert [v.about for v in views({"work": "a"}, {})] == ["work"]


def test_a_dead_letter_without_a_reason_is_reported() -> None:
    parked = [DeadLetter(dlq_seq=1, reason="undecodable: bad json"), DeadLetter(dlq_seq=2, reason=" ")]
    report = check(logged(*CLEAN), [], parked=parked)
    assert report.by_kind["dead_letter_without_reason"] == 1 and report.violations[0].seq == 2


def test_a_bad_records_file_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a", "seq": 1}\n\n{"id": "b", "seq": "two"}\n')
    with pytest.raises(ValueError, match=r"records.jsonl:3: .*seq"):
        read_records(path)
    path.write_text('{"id": "a", "seq": 1}\n')
    assert read_records(path) == [ClientRecord(id="a", seq=1)]
    assert main(["--nats", "nats://127.0.0.1:1", "--client-records", str(tmp_path / "missing.jsonl")]) == 2


# ---- property: a valid lifecycle is never reported -------------------------------------

ATTEMPT_END = st.sampled_from(["failed", "handed_back", "vanished"])


@st.composite
def valid_history(draw: st.DrawFn) -> list[Event]:
    """Items through valid lifecycles, interleaved, under leaders elected with growing epochs."""
    epoch = 5
    lives: list[list[Event]] = []
    for i in range(draw(st.integers(1, 6))):
        work_id = f"w{i}"
        events: list[Event] = [added(work_id)]
        failures: list[AttemptOutcome] = []
        ended: list[tuple[int, str]] = []  # attempts that ended with no newer one started: may still complete late
        for attempt in range(1, draw(st.integers(1, 4)) + 1):
            node = draw(st.sampled_from(["n1", "n2", "n3"]))
            events.append(WorkAssigned(work_id=work_id, node=node, attempt=attempt, deadline=DEADLINE, epoch=-1))
            if draw(st.booleans()):
                events.append(started(work_id, attempt, node))
                ended = []
            end = draw(ATTEMPT_END)
            if end == "failed":
                events.append(WorkAttemptFailed(work_id=work_id, node=node, attempt=attempt, reason=f"exit {attempt}"))
                failures.append(AttemptOutcome(attempt=attempt, node=node, reason=f"exit {attempt}"))
            elif end == "handed_back":
                events.append(WorkHandedBack(work_id=work_id, node=node, attempt=attempt, reason="worker stopped"))
            if end != "vanished":
                ended.append((attempt, node))
        final = draw(st.sampled_from(["complete", "fail", "cancel"]))
        if final == "complete":
            last = events[-1]
            assert isinstance(last, (WorkAssigned, WorkStarted, WorkAttemptFailed, WorkHandedBack))
            attempt, node = draw(st.sampled_from([(last.attempt, last.node), *ended]))
            events.append(completed(work_id, attempt, node))
        elif final == "fail":
            events.append(WorkFailed(work_id=work_id, reason="max attempts", attempts=failures, epoch=-1))
        else:
            events.append(WorkCancelled(work_id=work_id, reason="operator"))
        lives.append(events)
    merged: list[Event] = [elected(epoch)]
    while any(lives):  # interleave, keeping each item's order; elections happen between any two events
        life = draw(st.sampled_from([lf for lf in lives if lf]))
        event = life.pop(0)
        if draw(st.integers(0, 9)) == 0:
            epoch += draw(st.integers(1, 3))
            merged.append(elected(epoch, node=draw(st.sampled_from(["n1", "n2"]))))
        if event.epoch == -1:  # a decision carries the epoch of the leader of its time
            event = msgspec.structs.replace(event, epoch=epoch)
        merged.append(event)
    return merged


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_history())
def test_a_history_of_valid_lifecycles_is_never_reported(history: list[Event]) -> None:
    log = logged(*history)
    report = check(log, acked(log))
    assert report.clean, report.violations
    work = bundle.fold_all_events(log).work  # the live fold agrees every item ended
    assert all(item.status in TERMINAL for item in work.items.values())


# ---- on a real server ------------------------------------------------------------------


async def _history(pub: Publisher) -> list[ClientRecord]:
    """Elect a leader, add three items and run each to completion; the client's acknowledged WORK_ADDED records."""
    await pub.publish(elected(11, "lead"))
    records = []
    for i in range(3):
        ack = await pub.publish(WorkAdded(work_id=f"w{i}", work_type="selfplay", board_type="hex8", num_players=2))
        records.append(ClientRecord(id=ack.event.id, seq=ack.seq))
    for i in range(3):
        await pub.publish_many([assigned(f"w{i}", 1, "n2", epoch=11), started(f"w{i}", 1, "n2"), completed(f"w{i}", 1, "n2")])
    return records


def _cli(url: str, records: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    return subprocess.run([sys.executable, "-m", "ops.chaos.check", "--nats", url, "--client-records", str(records), "--json"],
                          capture_output=True, text=True, timeout=60, env=env)


async def test_a_real_history_checks_clean_and_a_forged_stale_decision_is_reported(bus: Bus, nats_url: str, tmp_path: Path) -> None:
    pub = Publisher(bus)
    records = await _history(pub)
    folder = Folder(bundle.PROJECTION)  # a live view, as a service keeps it, to compare with the checker's rebuild
    end = await LiveFold(bus, [folder], [ALL_EVENTS]).catch_up()
    live = LiveViews(last_seq=end, hashes=view_hashes(folder.state))
    report, undecodable = await judge(nats_url, records, live)
    assert report.clean and undecodable == 0 and report.work_items == 3, report.violations
    wrong = LiveViews(last_seq=end, hashes={**live.hashes, "work": "0" * 64})
    report, _ = await judge(nats_url, records, wrong)  # a live view that differs from the rebuild is caught
    assert [(v.kind, v.about) for v in report.violations] == [("projection_mismatch", "work")]

    path = tmp_path / "records.jsonl"
    path.write_bytes(b"\n".join(msgspec.json.encode(r) for r in records))
    clean = await asyncio.to_thread(_cli, nats_url, path)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    await pub.publish(elected(12, "other"))
    forged = await pub.publish(assigned("w0", 2, "n3", epoch=11))  # the deposed leader's decision, stored after its successor's election
    report, _ = await judge(nats_url, records, None)
    assert [(v.kind, v.seq) for v in report.violations] == [("stale_decision", forged.seq)]
    dirty = await asyncio.to_thread(_cli, nats_url, path)
    assert dirty.returncode == 1 and '"stale_decision":1' in dirty.stdout, dirty.stdout + dirty.stderr
