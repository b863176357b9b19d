"""Completed work items retire from the work fold's state: its snapshots stop growing with history, and no view changes."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from cli.commands import workview
from eventbus import events as ev
from projections import work, workviews
from projections.base import fold_events
from projections.snapshot import decode_snapshot, encode_snapshot
from services.leader.backoff import failure_streaks
from tests.test_projections import LOGS, NODES, PROPERTY, T0, numbered

NEVER = 10**12  # a retire_after no log reaches: the fold as it was before items retired


def _fold(events: Sequence[tuple[int, ev.Event]], retire_after: int, state: work.WorkState | None = None) -> work.WorkState:
    return fold_events(work.PROJECTION, events, state or work.WorkState(retire_after=retire_after))


def _views(state: work.WorkState) -> dict[str, object]:
    """What `rr work list/show`, `rr status`, the API, the metrics and the populator read of the state."""
    return {
        "counts": workviews.counts(state), "by_config": workviews.by_config(state), "by_node": workviews.by_node(state),
        "anomalies": [(a.seq, a.reason) for a in state.anomalies], "anomaly_count": state.anomaly_count,
        "streaks": failure_streaks(state.items.values(), retired=state.retired_tally), "fence": state.fence,
        "last_seq": state.last_seq,
    }


@PROPERTY
@given(LOGS, st.integers(min_value=1, max_value=12), st.data())
def test_a_snapshot_with_retired_items_plus_the_tail_equals_the_whole_fold_and_shows_what_the_unretired_fold_shows(
    log: list[ev.Event], retire_after: int, data_: st.DataObject
) -> None:
    events = numbered(log)
    whole = _fold(events, retire_after)
    cut = data_.draw(st.integers(min_value=0, max_value=len(events)))
    snapshot = decode_snapshot(work.PROJECTION, encode_snapshot(work.PROJECTION, _fold(events[:cut], retire_after)))
    assert snapshot is not None
    assert _fold(events[cut:], retire_after, snapshot.state) == whole

    unretired = _fold(events, NEVER)
    assert _views(whole) == _views(unretired)
    assert {w: i for w, i in unretired.items.items() if w not in whole.retired} == whole.items.to_dict()
    for work_id in whole.retired.keys():
        assert unretired.items[work_id].status is work.WorkStatus.COMPLETED


def _jobs(count: int) -> list[ev.Event]:
    out: list[ev.Event] = [ev.LeaderElected(role="scheduler", node="gpu-1", epoch=1)]
    for i in range(count):
        w, node = f"w-{i}", NODES[i % 3]
        out += [ev.WorkAdded(work_id=w, work_type="selfplay", board_type="hex8", num_players=2, ts=T0),
                ev.WorkAssigned(work_id=w, node=node, attempt=1, deadline=T0, epoch=1),
                ev.WorkStarted(work_id=w, node=node, attempt=1),
                ev.WorkCompleted(work_id=w, node=node, attempt=1)]
    return out


def test_the_state_holds_the_recent_items_only_and_judges_a_late_report_on_a_retired_one_as_before() -> None:
    log = _jobs(500)
    log += [ev.WorkCompleted(work_id="w-3", node=NODES[0], attempt=1),  # a zombie's second completion
            ev.WorkProgress(work_id="w-4", node=NODES[2], attempt=1, fraction=0.5),  # another node's late report
            ev.WorkAdded(work_id="w-5", work_type="selfplay", board_type="hex8", num_players=2)]  # a reused id
    state, unretired = _fold(numbered(log), 100), _fold(numbered(log), NEVER)
    assert len(state.items) <= 30 and workviews.retired_count(state) >= 470
    assert _views(state) == _views(unretired) and state.anomaly_count == 3
    small = len(encode_snapshot(work.PROJECTION, state))
    assert small * 5 < len(encode_snapshot(work.PROJECTION, unretired)), "a retired item costs a fraction of one kept"
    assert work.lookup(state, "w-3") is not None and work.lookup(state, "w-3").status is work.WorkStatus.COMPLETED  # type: ignore[union-attr]


def test_the_list_says_how_many_completed_items_it_leaves_out_and_how_to_see_one() -> None:
    assert workview.retired_note(0, 50_000) == ""
    note = workview.retired_note(472, 50_000)
    assert note.startswith("472 completed items older than 50,000 records are not listed") and "rr work show ID" in note


def test_a_fold_whose_first_event_comes_late_in_the_log_does_not_walk_every_earlier_sequence() -> None:
    late = [(10**9 + i, e) for i, e in enumerate(_jobs(3), 1)]  # the log's older records aged out
    state = _fold(late, 100)
    assert state.retired_through < min(state.completions.keys()) and len(state.items) == 3


@PROPERTY
@given(LOGS, st.integers(min_value=1, max_value=12))
def test_an_item_retires_at_the_first_record_retire_after_records_past_its_completion(
    log: list[ev.Event], retire_after: int
) -> None:
    retiring, unretired = work.WorkState(retire_after=retire_after), work.WorkState(retire_after=NEVER)
    for seq, event in numbered(log):
        if event.type_name() not in work.PROJECTION.reads:
            continue  # a record the fold does not read only moves its position: nothing retires on it
        retiring, unretired = work.apply(retiring, event, seq), work.apply(unretired, event, seq)
        due = {w for w, i in unretired.items.items()
               if i.status is work.WorkStatus.COMPLETED and i.updated_seq <= seq - retire_after}
        assert set(retiring.items.keys()) == set(unretired.items.keys()) - due
        assert set(retiring.retired.keys()) == due


def test_a_record_with_no_item_due_leaves_the_state_as_it_is() -> None:
    state = _fold(numbered(_jobs(3)), 100)  # completions at 5, 9 and 13
    state = work._retire(state, 101)  # the mark moves to just before the oldest completion, once
    assert work._retire(state, 102) is state and work._retire(state, 104) is state  # no new state per record
    first = work._retire(state, 105)
    assert set(first.retired.keys()) == {"w-0"} and work._retire(first, 108) is first
    assert set(work._retire(first, 109).retired.keys()) == {"w-0", "w-1"}
