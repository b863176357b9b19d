"""An attempt's consecutive progress reports folded as one step: the same states as folding each (pure, no server)."""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from eventbus import events as ev
from projections import bundle, work
from projections.reportruns import ReportRuns
from services.leader import queue
from tests.test_openmap import QUEUE_START, _both_ways, opened_at_once
from tests.test_projections import EVENTS, NODES, PROPERTY, T0, WORK, _spoiled, times

# Retiring soon, so that retirements fall due inside runs of reports.
SET_START = bundle.ProjectionSet(work=work.WorkState(retire_after=3))


# The strategies each log draws from, built once: a strategy built inside the draw loop is validated and labelled
# again at each draw, which took most of these tests' time. The same distributions, so logs of the same shapes.
_NODE = st.sampled_from(NODES)
_FEW = st.integers(0, 3)
_REPORTS = st.integers(0, 12)
_FRACTION = st.floats(0, 1)
_MESSAGE = st.sampled_from(["", "game 3"])
_REPORTER = {n: st.sampled_from([n, n, n, "gpu-9"]) for n in NODES}
_ATTEMPT = st.sampled_from([1, 1, 1, 2])
_EPOCH = st.sampled_from([None, None, None, 1])
_TIME = st.one_of(times, times, times, st.none())
_NOISE = st.lists(EVENTS, max_size=8)


@functools.cache
def up_to(n: int) -> st.SearchStrategy[int]:
    """0 to `n`, one strategy per bound."""
    return st.integers(0, n)


@st.composite
def reporting_logs(draw: st.DrawFn) -> list[ev.Event]:
    """Work lives whose attempts report in runs (some reports from another attempt or node, with an epoch or
    no time, or after the completion), interleaved with each other and with noise, so that runs are long, cut and broken."""
    queues: list[list[ev.Event]] = []
    out: list[ev.Event] = [ev.LeaderElected(role="scheduler", node="gpu-1", epoch=1, source="gpu-1", ts=T0)]
    for w in WORK:
        node = draw(_NODE)
        life: list[ev.Event] = [
            ev.WorkAdded(work_id=w, work_type="selfplay", board_type="hex8", num_players=2, ts=draw(times)),
            ev.WorkAssigned(work_id=w, node=node, attempt=1, deadline=T0, epoch=1, ts=draw(times)),
            ev.WorkStarted(work_id=w, node=node, attempt=1, ts=draw(times)),
        ]
        for _ in range(draw(_REPORTS)):
            life.append(ev.WorkProgress(
                work_id=w, fraction=draw(_FRACTION), message=draw(_MESSAGE), node=draw(_REPORTER[node]),
                attempt=draw(_ATTEMPT), epoch=draw(_EPOCH), ts=draw(_TIME),
            ))
        life.append(ev.WorkCompleted(work_id=w, node=node, attempt=1, ts=draw(times)))
        # Late reports of the attempt that completed: each one is an anomaly, none stands for another.
        life += [ev.WorkProgress(work_id=w, node=node, attempt=1, fraction=1.0, ts=draw(times)) for _ in range(draw(_FEW))]
        queues.append(life[: draw(up_to(len(life)))])
    queues.append(draw(_NOISE))
    while any(queues):
        # Mostly the same life as the event before: long runs, now and then cut by another's.
        held = [q for q in queues if q]
        queue_ = held[0] if draw(_FEW) else held[draw(up_to(len(held) - 1))]
        out.append(queue_.pop(0))
    return out


@PROPERTY
@given(reporting_logs(), st.data())
def test_the_set_folding_report_runs_equals_building_it_per_event(log: list[ev.Event], data_: st.DataObject) -> None:
    stored = _spoiled(log, data_)
    reads = set(data_.draw(st.lists(st.integers(0, len(stored)), max_size=4)))
    for start in (bundle.ProjectionSet(), SET_START):
        _both_ways(bundle.PROJECTION, start, stored, reads)


@PROPERTY
@given(reporting_logs(), st.data())
def test_the_queue_folding_report_runs_equals_the_queue_folded_per_event(log: list[ev.Event], data_: st.DataObject) -> None:
    stored = _spoiled(log, data_)
    reads = set(data_.draw(st.lists(st.integers(0, len(stored)), max_size=4)))
    _both_ways(queue.PROJECTION, queue.QueueState(), stored, reads)
    with opened_at_once():
        _both_ways(queue.PROJECTION, QUEUE_START, stored, reads)


class _Counting:
    """A folding holder that only counts what it is handed."""

    def __init__(self) -> None:
        self.folded: list[int] = []

    def apply(self, _event: Any, seq: int) -> None:
        self.folded.append(seq)

    def state(self) -> None:
        return None


def test_a_run_of_reports_is_handed_on_as_its_last_and_cut_where_a_retirement_falls_due() -> None:
    w = work.WorkItem(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2,
                      status=work.WorkStatus.RUNNING, attempt=1, node="gpu-1")
    works = work.WorkState(items=work.WorkState().items.set("w-1", w), retire_after=3, retired_through=2)
    counting = _Counting()
    runs = ReportRuns(counting, lambda: works)  # type: ignore[arg-type,var-type]
    for seq in range(1, 9):  # a retirement falls due after seq 5: 5 - 3 > 2
        runs.apply(ev.WorkProgress(work_id="w-1", node="gpu-1", attempt=1, fraction=seq / 10, ts=T0), seq)
    runs.apply(ev.HostOnline(node="gpu-1", roles=["selfplay"], ts=T0), 9)
    # Up to 5 the last stands for all; from 6 on each is past the due point of the state it sees (this one never moves).
    assert counting.folded == [6, 7, 8, 9]
    works = work.WorkState(items=works.items, retire_after=3, retired_through=100)
    for seq, ts in ((20, T0), (21, None), (22, T0), (23, T0), (24, T0)):
        runs.apply(ev.WorkProgress(work_id="w-1", node="gpu-1", attempt=1, fraction=0.5, ts=ts), seq)
        if seq == 21:
            runs.state()
    runs.state()
    # The last of 20-21 has no time (the set's `last_ts` would be 20's): each folded; 22-24 as 24.
    assert counting.folded[4:] == [20, 21, 24]
