"""An item's consecutive progress reports folded as one step while a rebuild folds many events unread.

A progress report from the attempt an item runs moves nothing but that item's progress, its
update time and sequence, and the fold's position (the scheduler queue's newest sequence of the
item too): the next report of the same attempt overwrites all of it. So when a log holds a run of
reports of one attempt with nothing between them (each attempt reports every few seconds; a
fleet's log is ~45% progress reports, a bench_scheduler log ~65%), only the last needs folding,
provided that
  - before the run the item runs that attempt on that node (the work fold's fast path then takes
    every report of the run and never records an anomaly),
  - no report carries an epoch (a fence would judge it),
  - the last one has a time (a set's `last_ts` is the newest time folded), and
  - no retirement falls due before the last (the work fold retires by sequence, after a report).
Otherwise a report is folded as it came; a run that a retirement falls due in is cut there (the
report at which it falls due is folded, with the retirement after it, and what follows goes on). `ReportRuns` wraps a fold's holder
(`Projection.folding`) for the folds whose only reader of WORK_PROGRESS is the work fold's own
step (the bundle's work part, the scheduler queue); tests/test_report_runs.py folds logs full of
such runs, broken ones included, both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from eventbus.events import Event, WorkProgress
from projections.base import Folding
from projections.work import WorkState, WorkStatus

S = TypeVar("S")

_RUNNING = WorkStatus.RUNNING


class ReportRuns(Generic[S]):
    """A folding holder handing `inner` one report per run of an attempt's consecutive progress reports, where the last one stands for all."""

    __slots__ = ("_inner", "_works", "_run", "_key")

    def __init__(self, inner: Folding[S], works: Callable[[], WorkState]) -> None:
        self._inner = inner
        self._works = works  # the work fold's state as folded so far (its maps may be open): read, never kept
        self._run: list[tuple[WorkProgress, int]] = []  # the reports held back, in order
        self._key: tuple[str, int, str] = ("", 0, "")  # the run's (work id, attempt, node)

    def apply(self, event: Event, seq: int) -> None:
        """Fold one event: a progress report is held back until its run ends."""
        if type(event) is WorkProgress and event.epoch is None:
            key = (event.work_id, event.attempt, event.node)
            if self._run:
                if key == self._key:
                    self._run.append((event, seq))
                    return
                self._flush()
            self._run, self._key = [(event, seq)], key
            return
        if self._run:
            self._flush()
        self._inner.apply(event, seq)

    def state(self) -> S:
        """The state after every event folded so far."""
        if self._run:
            self._flush()
        return self._inner.state()

    def _flush(self) -> None:
        run, self._run = self._run, []
        i = 0
        while i < len(run):
            j = standing_for(self._works(), run, i)
            self._inner.apply(*run[j])  # run[i:j] are left out: run[j] overwrites all they would write
            i = j + 1


def standing_for(works: WorkState, run: list[tuple[WorkProgress, int]], i: int) -> int:
    """The index of the report of `run` (one attempt's epoch-less reports in a row) that, folded alone onto `works`,
    leaves what folding `run[i]` up to it one by one leaves: `i` itself when none further can."""
    item = works.items.get(run[i][0].work_id)
    if item is None or item.status is not _RUNNING or item.attempt != run[i][0].attempt or item.node != run[i][0].node:
        return i  # the fast path would not take it: folded as it came
    # A retirement runs after the report at the first sequence past `due`: the run is cut there.
    due = works.retired_through + works.retire_after
    j = i
    while j + 1 < len(run) and run[j][1] <= due:
        j += 1
    return j if run[j][0].ts is not None else i
