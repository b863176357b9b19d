"""Re-running the pure scheduling core on a recording in simulated time: deterministic for a seed.

Each time something happens (a node comes or goes, work is added, a job ends) the pending
items are planned with `policy.plan_assignments`, exactly as the leader's assigner plans them.
A job runs for its own recorded duration when the recording has one (so replaying the recorded
config reproduces the record), else for one drawn from the recorded durations of its work type
on nodes of its GPU class. Config signals (freshness, Elo velocity) are not replayed: every config
has the neutral signals, so the curriculum and explicit priorities decide the order.
"""

from __future__ import annotations

import heapq
import itertools
import random
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from cli.whatif.recording import Arrival, NodeSpan, Recording
from config.sections.scheduler import SchedulerSettings
from services.leader.policy import ConfigSignals, NodeView, WorkView, plan_assignments, rank

DEFAULT_DURATION_S = 60.0  # a work type the recording never saw complete

_UP, _DOWN, _DONE, _ADDED = 0, 1, 2, 3  # at one instant: nodes first, then endings, then arrivals


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a scheduler did with a window: first assignment and completion per item, seconds into the window."""

    assigned: dict[str, tuple[str, float]]
    completed: dict[str, float]
    ran: dict[str, float]  # work id -> seconds its completed attempt ran


def gpu_class(vram_gb: float) -> str:
    """Durations are pooled per work type and this: cpu, or GPU memory rounded to 8 GB steps."""
    return "cpu" if vram_gb <= 0 else f"gpu{int(vram_gb // 8) * 8}"


def duration_pools(recording: Recording) -> dict[tuple[str, str], list[float]]:
    """(work type, GPU class) -> recorded durations, sorted (a draw must not depend on dict order)."""
    types = {a.work_id: a.work_type for a in recording.arrivals}
    vram = {s.node: s.vram_gb for s in recording.nodes}
    pools: dict[tuple[str, str], list[float]] = {}
    for work_id, seconds in recording.durations.items():
        node = recording.assigned.get(work_id, ("", 0.0))[0]
        if work_id in types:
            pools.setdefault((types[work_id], gpu_class(vram.get(node, 0.0))), []).append(seconds)
            pools.setdefault((types[work_id], "*"), []).append(seconds)
    return {key: sorted(values) for key, values in pools.items()}


class _Sim:
    def __init__(self, recording: Recording, settings: SchedulerSettings, seed: int, slots: int) -> None:
        self.rec, self.settings, self.slots = recording, settings, slots
        self.rng = random.Random(seed)
        self.pools = duration_pools(recording)
        self.nodes: dict[str, NodeSpan] = {}
        self.span_of: dict[str, int] = {}  # node -> the index of its span online now
        self.running: dict[str, dict[str, int]] = {}  # node -> work id -> attempt token
        self.pending: dict[str, Arrival] = {}
        # Signals are neutral and the settings fixed here, so an item's rank never changes: the items are ranked
        # once and the pending kept in that order (their places in `ranked`), for `plan_from_best`.
        self.ranked = rank([_view(a) for a in recording.arrivals], _NEUTRAL, settings)
        self.place = {w.work_id: i for i, w in enumerate(self.ranked)}
        self.queued: list[int] = []
        self.assigned: dict[str, tuple[str, float]] = {}
        self.completed: dict[str, float] = {}
        self.ran: dict[str, float] = {}
        self.queue: list[tuple[float, int, int, str, str]] = []
        self.tokens = 0

    def push(self, at: float, kind: int, a: str, b: str = "") -> None:
        self.tokens += 1
        heapq.heappush(self.queue, (at, kind, self.tokens, a, b))

    def run(self) -> Outcome:
        for i, span in enumerate(self.rec.nodes):  # which span: a node's two spans may meet at one instant
            self.push(span.start, _UP, span.node, str(i))
            if span.end is not None:
                self.push(span.end, _DOWN, span.node, str(i))
        for arrival in self.rec.arrivals:
            self.push(arrival.at, _ADDED, arrival.work_id)
        arrivals = {a.work_id: a for a in self.rec.arrivals}
        spans = self.rec.nodes
        while self.queue and self.queue[0][0] <= self.rec.seconds:
            now = self.queue[0][0]
            while self.queue and self.queue[0][0] == now:
                _, kind, token, a, b = heapq.heappop(self.queue)
                self.happen(kind, token, a, b, arrivals, spans, now)
            self.plan(now)
        return Outcome(assigned=self.assigned, completed=self.completed, ran=self.ran)

    def happen(self, kind: int, token: int, a: str, b: str, arrivals: Mapping[str, Arrival],
               spans: Sequence[NodeSpan], now: float) -> None:
        if kind == _UP:
            self.nodes[a], self.span_of[a] = spans[int(b)], int(b)
            self.running.setdefault(a, {})
        elif kind == _DOWN:
            if self.span_of.get(a) != int(b):
                return  # the node's next span began at this same instant (nodes come up first): it stays
            self.nodes.pop(a, None)
            for work_id in self.running.pop(a, {}):  # handed back: planned again
                self.enqueue(arrivals[work_id])
        elif kind == _ADDED:
            self.enqueue(arrivals[a])
        elif self.running.get(b, {}).get(a) == token:  # not an attempt handed back since
            del self.running[b][a]
            self.completed[a] = now

    def plan(self, now: float) -> None:
        if not self.pending or all(len(self.running[n]) >= self.slots for n in self.nodes):
            return  # nothing to place, or nowhere to place it: the plan would be empty
        views = [NodeView(node=n, alive=True, roles=s.roles, vram_gb=s.vram_gb, max_parallel_jobs=self.slots,
                          running=len(self.running[n]), configured=False) for n, s in self.nodes.items()]
        pending = (self.ranked[place] for place in self.queued)
        for work_id, node in plan_from_best(pending, views, self.settings):
            arrival = self.pending.pop(work_id)
            del self.queued[bisect_left(self.queued, self.place[work_id])]
            self.assigned.setdefault(work_id, (node, now))
            seconds = self.duration(arrival, node)
            self.ran[work_id] = seconds
            self.push(now + seconds, _DONE, work_id, node)
            self.running[node][work_id] = self.tokens

    def enqueue(self, arrival: Arrival) -> None:
        if arrival.work_id not in self.pending:
            self.pending[arrival.work_id] = arrival
            insort(self.queued, self.place[arrival.work_id])

    def duration(self, arrival: Arrival, node: str) -> float:
        own = self.rec.durations.get(arrival.work_id)
        if own is not None:
            return own
        pool = self.pools.get((arrival.work_type, gpu_class(self.nodes[node].vram_gb))) or self.pools.get((arrival.work_type, "*"))
        return self.rng.choice(pool) if pool else DEFAULT_DURATION_S


_NEUTRAL: Mapping[str, ConfigSignals] = {}


def _view(a: Arrival) -> WorkView:
    return WorkView(work_id=a.work_id, work_type=a.work_type, board_type=a.board_type, num_players=a.num_players,
                    priority=a.priority, target_node=a.target_node, order=a.order)


def plan_from_best(ranked: Iterable[WorkView], nodes: Sequence[NodeView], settings: SchedulerSettings) -> list[tuple[str, str]]:
    """`plan_assignments` of the pending items `ranked` best first (orders distinct), with neutral signals: the same plan.

    Ranking thousands of pending items at every job's end was most of a simulation (3.2M sort keys
    for a day of 4,500 items at 22M records). The plan places the best-ranked items first and stops
    once the free slots are taken, so the best few give the same plan when they take them all; when
    they do not (items no free node may run), it is asked again with four times as many.
    """
    free = sum(max(0, n.max_parallel_jobs - n.running) for n in nodes)
    pending, size = iter(ranked), 2 * free + 16
    few: list[WorkView] = []
    while True:
        few += itertools.islice(pending, size - len(few))
        plan = plan_assignments(few, nodes, _NEUTRAL, settings)
        if len(plan) >= free or len(few) < size:  # every free slot taken, or every pending item asked about
            return plan
        size *= 4


def simulate(recording: Recording, settings: SchedulerSettings, *, seed: int = 0, slots: int = 1) -> Outcome:
    """What a scheduler with `settings` would have done with the recorded window."""
    return _Sim(recording, settings, seed, slots).run()


def recorded(recording: Recording) -> Outcome:
    """What the real scheduler did, in the same shape."""
    return Outcome(assigned=dict(recording.assigned), completed=dict(recording.completed), ran=dict(recording.durations))
