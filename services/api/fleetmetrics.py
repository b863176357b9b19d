"""The fleet's vital signs for Prometheus: what the events say as they are folded, pure, and what the state says at a scrape.

`FleetObserver.observe(event)` turns one event into samples (latencies, durations, counts) with no
I/O and no clock of its own; `gauges(...)` reads the folded state. The api's /metrics handler
(services/api/metrics.py) feeds both into Prometheus instruments.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from eventbus.consumerlag import ConsumerLag
from eventbus.events import (
    Event,
    LeaderElected,
    ModelDistributed,
    ModelPromoted,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCompleted,
    WorkStarted,
)
from projections import work
from projections.bundle import ProjectionSet
from projections.status_view import StatusView
from servicekit.looplag import LoopLagStats

# Only these types are decoded for metrics; the rest are counted by type from their subject.
OBSERVED = frozenset(t.type_name() for t in (
    WorkAdded, WorkAssigned, WorkStarted, WorkCompleted, WorkAttemptFailed, ModelPromoted, ModelDistributed, LeaderElected,
))
TRACKED_ITEMS = 100_000  # items whose add or start time is remembered; the oldest are forgotten past it


class Sample(msgspec.Struct, frozen=True):
    """One observation: a histogram sample or a counter increment (value 1), with its labels."""

    name: str  # add_to_assign_s | job_duration_s | promotions | distributions | leadership_changes
    value: float
    labels: tuple[tuple[str, str], ...] = ()


class FleetObserver:
    """Remembers when items were added and attempts started, to time assignments and jobs."""

    def __init__(self) -> None:
        self._added: dict[str, tuple[dt.datetime | None, str]] = {}  # work_id -> (added at, work type)
        self._started: dict[tuple[str, int], dt.datetime | None] = {}  # (work_id, attempt) -> started at

    def observe(self, event: Event) -> list[Sample]:
        """The samples one event makes."""
        if isinstance(event, WorkAdded):
            self._remember(self._added, event.work_id, (event.ts, event.work_type))
        elif isinstance(event, WorkAssigned) and event.attempt == 1 and event.work_id in self._added:
            return _seconds("add_to_assign_s", self._added[event.work_id][0], event.ts)
        elif isinstance(event, WorkStarted):
            self._remember(self._started, (event.work_id, event.attempt), event.ts)
        elif isinstance(event, (WorkCompleted, WorkAttemptFailed)):
            return self._job_ended(event)
        elif isinstance(event, ModelPromoted):
            return [Sample("promotions", 1, (("config", f"{event.board_type}_{event.num_players}p"),))]
        elif isinstance(event, ModelDistributed):
            return [Sample("distributions", 1)]
        elif isinstance(event, LeaderElected):
            return [Sample("leadership_changes", 1, (("role", event.role),))]
        return []

    def _job_ended(self, event: WorkCompleted | WorkAttemptFailed) -> list[Sample]:
        started = self._started.pop((event.work_id, event.attempt), None)
        work_type = self._added.get(event.work_id, (None, "unknown"))[1]
        outcome = "completed" if isinstance(event, WorkCompleted) else "failed"
        labels = (("work_type", work_type), ("outcome", outcome))
        if isinstance(event, WorkCompleted) and event.duration_s > 0:
            return [Sample("job_duration_s", event.duration_s, labels)]
        return _seconds("job_duration_s", started, event.ts, labels)

    @staticmethod
    def _remember(memory: dict[Any, Any], key: object, value: object) -> None:
        if len(memory) >= TRACKED_ITEMS:
            memory.pop(next(iter(memory)))  # the oldest: dicts keep insertion order
        memory[key] = value


def _seconds(name: str, start: dt.datetime | None, end: dt.datetime | None, labels: tuple[tuple[str, str], ...] = ()) -> list[Sample]:
    if start is None or end is None:
        return []
    return [Sample(name, max(0.0, (end - start).total_seconds()), labels)]


class Gauges(msgspec.Struct, frozen=True, kw_only=True):
    """What a scrape reads from the folded state and the server."""

    nodes: dict[str, int]  # alive | offline -> count
    queue: dict[tuple[str, str], int]  # (status, work_type) -> items
    loop_lag_s: float
    loop_lag_max_s: float
    consumers: dict[str, ConsumerLag]
    dead_letters: int | None
    last_seq: int


def gauges(state: ProjectionSet, view: StatusView, lag: LoopLagStats, consumers: dict[str, ConsumerLag],
           dead_letters: int | None) -> Gauges:
    """The gauges of one scrape."""
    alive = sum(1 for n in view.nodes if n.alive)
    queue: dict[tuple[str, str], int] = {}
    for item in state.work.items.values():
        key = (item.status.value, item.work_type)
        queue[key] = queue.get(key, 0) + 1
    for tally_key, tally in state.work.retired_tally.items():  # completed items that left the state still count
        key = (work.WorkStatus.COMPLETED.value, tally_key.split(" ", 1)[0])
        queue[key] = queue.get(key, 0) + tally.count
    return Gauges(nodes={"alive": alive, "offline": len(view.nodes) - alive}, queue=queue, loop_lag_s=lag.last_s,
                  loop_lag_max_s=lag.max_s, consumers=consumers, dead_letters=dead_letters, last_seq=state.last_seq)
