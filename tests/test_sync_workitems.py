"""`sync` work items judged from the data fold: done, waiting, or failed with a reason."""

from __future__ import annotations

import datetime as dt

from eventbus.events import (
    DataSyncComplete,
    DataSyncPlanned,
    WorkAdded,
    WorkAssigned,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
    WorkStarted,
)
from projections.base import fold_events
from projections.syncwork import (
    SYNC_REQUESTS,
    SyncDone,
    SyncFailed,
    SyncRequest,
    SyncWaiting,
    apply_sync_request,
    missing_fields,
    requested_copies,
    served_here,
    sync_step,
)
from services.leader.transfers import plan_transfers
from tests.test_sync_planner import SETTINGS, T0, batch, fleet, folded


def planned(attempt: int = 1) -> DataSyncPlanned:
    return DataSyncPlanned(batch_id="b1", transfer_id=f"b1>n2#{attempt}", from_node="n1", to_node="n2", size_bytes=1000)


def test_a_request_names_its_batch_and_its_target_node() -> None:
    assert missing_fields({"batch_id": "b1"}, "n2") == []
    assert [f for f, _ in missing_fields({}, None)] == ["params.batch_id", "target_node"]
    assert [f for f, _ in missing_fields({"batch_id": 3}, "n2")] == ["params.batch_id"]


def test_a_copy_waits_until_planned_and_done() -> None:
    assert sync_step("b1", "n2", folded([batch("b1", "n1")])) == SyncWaiting(planned=False)
    assert sync_step("b1", "n2", folded([batch("b1", "n1"), planned()])) == SyncWaiting(planned=True)
    done = DataSyncComplete(batch_id="b1", transfer_id="b1>n2#1", to_node="n2", ok=True, sha256="ab" * 32, size_bytes=1000)
    assert sync_step("b1", "n2", folded([batch("b1", "n1"), planned(), done])) == SyncDone()


def test_a_batch_the_target_already_holds_is_done_at_once() -> None:
    assert sync_step("b1", "n1", folded([batch("b1", "n1")])) == SyncDone()


def test_unknown_withdrawn_tainted_or_failed_copies_fail_with_the_reason() -> None:
    failed = DataSyncComplete(batch_id="b1", transfer_id="b1>n2#1", to_node="n2", ok=False, error="sha256 mismatch")
    cases = {
        "not in the log": sync_step("zz", "n2", folded([batch("b1", "n1")])),
        "withdrawn": sync_step("b1", "n2", folded([batch("b1", "n1"), WorkFailed(work_id="w-b1", reason="x")])),
        "quarantined": sync_step("b1", "n2", folded([batch("b1", "n1")]), tainted={"b1"}),
        "sha256 mismatch": sync_step("b1", "n2", folded([batch("b1", "n1"), planned(), failed])),
    }
    for words, step in cases.items():
        assert isinstance(step, SyncFailed) and words in step.reason, (words, step)


def test_a_requested_copy_goes_to_a_node_that_trains_nothing_first_and_whatever_its_age() -> None:
    old = batch("b1", "n1", minutes=-60 * 24 * 30)  # far older than max_batch_age_h
    state = folded([old, batch("b2", "n1")])
    now = T0
    assert [p.batch_id for p in plan_transfers(state, fleet(set(), {"n1", "n3"}), now, SETTINGS)] == []
    plans = plan_transfers(state, fleet({"n2"}, {"n1", "n2", "n3"}), now, SETTINGS, requested=frozenset({("b1", "n3")}))
    assert (plans[0].transfer_id, plans[0].reason) == ("b1>n3#1", "requested by a sync work item")
    assert {p.transfer_id for p in plans} == {"b1>n3#1", "b2>n2#1"}  # the old batch still goes to no training node
    gone = plan_transfers(state, fleet(set(), {"n1"}), now, SETTINGS, requested=frozenset({("b1", "n3")}))
    assert gone == []  # the target is not alive: nothing planned (the item waits, the scheduler handles its node)


def test_the_requests_fold_follows_a_sync_item_from_added_to_ended() -> None:
    def add(work_id: str, **kw: object) -> WorkAdded:
        fields: dict[str, object] = {"work_type": "sync", "board_type": "hex8", "num_players": 2,
                                     "params": {"batch_id": "b1"}, "target_node": "n2"} | kw
        return WorkAdded(work_id=work_id, **fields)  # type: ignore[arg-type]

    deadline = T0 + dt.timedelta(hours=1)
    events = [add("w1"), add("w2", work_type="selfplay"), add("w3", params={}), add("w4"),
              WorkAssigned(work_id="w1", node="n2", attempt=1, deadline=deadline), WorkStarted(work_id="w1", node="n2", attempt=1),
              WorkAssigned(work_id="w4", node="n2", attempt=1, deadline=deadline), WorkCancelled(work_id="w4", reason="x")]
    state = fold_events(SYNC_REQUESTS, list(enumerate(events, start=1)))
    assert list(state.requests.keys()) == ["w1"] and state.anomaly_count == 0
    assert served_here(state, "n2") == [SyncRequest(work_id="w1", batch_id="b1", target="n2", node="n2", attempt=1, started=1)]
    assert served_here(state, "n1") == [] and requested_copies(state) == {("b1", "n2")}
    done = apply_sync_request(state, WorkCompleted(work_id="w1", node="n2", attempt=1), 9)
    assert not done.requests and requested_copies(done) == frozenset()
