"""A chaos run's report, pure: the JSON summary (faults, violations, recovery times) and the timeline picture.

Times are UNIX seconds on this machine's clock: the nemesis stamps what it did, the log's events
carry their publisher's `ts`, and every host of the fleet shares one clock.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Sequence

import msgspec

from eventbus.events import Event, LeaderElected, LeaderLost, WorkAssigned, WorkCompleted
from ops.chaos.checker import CheckReport
from ops.chaos.schedule import KINDS, Fault


class Injected(msgspec.Struct, frozen=True, kw_only=True):
    """One fault as the nemesis carried it out: on whom, from when to when, and whether it hit the scheduler leader."""

    fault: Fault
    started: float
    ended: float
    victim: str = ""  # the host (and process) it hit, resolved at injection
    hit_leader: bool = False
    error: str = ""  # why it could not be injected (no such process right then ...); "" when it was
    undo_error: str = ""  # why undoing it failed (the final heal still reconnects the network)


class Point(msgspec.Struct, frozen=True, kw_only=True):
    """One event on the timeline: when, its type, the node it is about."""

    t: float
    seq: int
    type: str
    node: str


class Recovery(msgspec.Struct, frozen=True, kw_only=True):
    """Seconds from a fault's start to the next assignment, and (faults that hit the leader) to the next election."""

    to_assignment: list[float]
    to_leader: list[float]
    never_assigned: int  # faults followed by no assignment at all
    never_led: int


class Percentiles(msgspec.Struct, frozen=True, kw_only=True):
    """p50 and p99 of a list of seconds (None when it is empty), and how many there were."""

    p50: float | None
    p99: float | None
    n: int


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """What `python -m ops.chaos --json` prints: the run in one object."""

    seed: int
    duration_s: float
    clean: bool
    faults_by_kind: dict[str, int]
    faults_not_injected: int
    violations_by_kind: dict[str, int]
    violations: list[str]
    recovery_to_assignment_s: Percentiles
    recovery_to_leader_s: Percentiles
    acknowledged: int
    events: int
    schedule: list[Fault]
    shrunk_schedule: list[Fault] | None = None
    timeline: str = ""
    drained: bool = True
    views_compared: int = 0  # projections of a live bundle snapshot compared with their rebuild (0: no snapshot yet)


_POINT_TYPES = (WorkAssigned, WorkCompleted, LeaderElected, LeaderLost)


def points(log: Iterable[tuple[int, Event]]) -> list[Point]:
    """The events the timeline and recovery times read: assignments, completions, elections, step-downs."""
    out = []
    for seq, event in log:
        if isinstance(event, _POINT_TYPES) and event.ts is not None:
            role = getattr(event, "role", "scheduler")
            if role == "scheduler":
                out.append(Point(t=event.ts.timestamp(), seq=seq, type=event.type_name(), node=str(getattr(event, "node", ""))))
    return sorted(out, key=lambda p: (p.t, p.seq))


def window(timeline: Sequence[Point], since: float) -> list[Point]:
    """The points from `since` on, led by the last election before it and any step-down after that (who led then)."""
    before = [p for p in timeline if p.t < since and p.type in ("LEADER_ELECTED", "LEADER_LOST")]
    last = max((i for i, p in enumerate(before) if p.type == "LEADER_ELECTED"), default=len(before))
    return [*before[last:], *(p for p in timeline if p.t >= since)]


def _first_after(t: float, times: Sequence[float]) -> float | None:
    return next((x - t for x in times if x >= t), None)


def recovery(injected: Sequence[Injected], timeline: Sequence[Point]) -> Recovery:
    """For each injected fault: time to the next WORK_ASSIGNED, and, when it hit the leader, to the next LEADER_ELECTED."""
    assigned = [p.t for p in timeline if p.type == "WORK_ASSIGNED"]
    elected = [p.t for p in timeline if p.type == "LEADER_ELECTED"]
    to_assignment, to_leader, never_assigned, never_led = [], [], 0, 0
    for fault in (f for f in injected if not f.error):
        gap = _first_after(fault.started, assigned)
        never_assigned += gap is None
        to_assignment += [] if gap is None else [gap]
        if fault.hit_leader:
            gap = _first_after(fault.started, elected)
            never_led += gap is None
            to_leader += [] if gap is None else [gap]
    return Recovery(to_assignment=to_assignment, to_leader=to_leader, never_assigned=never_assigned, never_led=never_led)


def percentiles(values: Sequence[float]) -> Percentiles:
    """Nearest-rank p50 and p99, rounded to milliseconds."""
    if not values:
        return Percentiles(p50=None, p99=None, n=0)
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * q / 100) - 1))], 3)

    return Percentiles(p50=rank(50), p99=rank(99), n=len(ordered))


def summary(seed: int, duration_s: float, schedule: Sequence[Fault], injected: Sequence[Injected], report: CheckReport,
            timeline: Sequence[Point], *, drained: bool = True, timeline_path: str = "", views_compared: int = 0) -> Summary:
    """The run's JSON summary."""
    done = [f for f in injected if not f.error]
    kinds = Counter(f.fault.kind for f in done)
    rec = recovery(injected, timeline)
    return Summary(
        seed=seed, duration_s=duration_s, clean=report.clean and drained,
        faults_by_kind={k: kinds.get(k, 0) for k in KINDS}, faults_not_injected=len(injected) - len(done),
        violations_by_kind=dict(report.by_kind), violations=[f"{v.kind} at seq {v.seq} ({v.about}): {v.detail}" for v in report.violations],
        recovery_to_assignment_s=percentiles(rec.to_assignment), recovery_to_leader_s=percentiles(rec.to_leader),
        acknowledged=report.acknowledged, events=report.events, schedule=list(schedule), timeline=timeline_path, drained=drained,
        views_compared=views_compared)


# ---- the timeline picture: one self-contained HTML page with an SVG --------------------------------

_WIDTH, _LEFT, _LANE = 1200, 150, 22
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


def _leadership(timeline: Sequence[Point], end: float) -> list[tuple[float, float, str]]:
    """(from, to, node) spans of scheduler leadership: from an election to the next election or step-down."""
    spans, holder, since = [], "", 0.0
    for p in timeline:
        if p.type == "LEADER_ELECTED" or (p.type == "LEADER_LOST" and p.node == holder):
            if holder:
                spans.append((since, p.t, holder))
            holder, since = (p.node, p.t) if p.type == "LEADER_ELECTED" else ("", p.t)
    if holder:
        spans.append((since, end, holder))
    return spans


def render_timeline(injected: Sequence[Injected], timeline: Sequence[Point], title: str) -> str:
    """Faults as bands (one lane per kind, shaded over the whole chart too), leadership spans and event ticks."""
    kinds = sorted({f.fault.kind for f in injected})
    start = min([p.t for p in timeline] + [f.started for f in injected], default=0.0)
    end = max([p.t for p in timeline] + [f.ended for f in injected], default=start + 1.0)
    span = max(end - start, 1.0)

    def x(t: float) -> float:
        return _LEFT + (t - start) / span * (_WIDTH - _LEFT - 10)

    lanes = [*kinds, "leader", "WORK_ASSIGNED", "WORK_COMPLETED", "LEADER_LOST"]
    height = 30 + _LANE * len(lanes) + 30
    body = [f'<text x="4" y="{30 + _LANE * i + 15}" font-size="12">{html.escape(name)}</text>' for i, name in enumerate(lanes)]
    for f in injected:
        i, color = kinds.index(f.fault.kind), _PALETTE[kinds.index(f.fault.kind) % len(_PALETTE)]
        w = max(x(f.ended) - x(f.started), 2.0)
        tip = html.escape(f"{f.fault.kind} {f.victim or f.fault.target} {f.ended - f.started:.1f}s {f.error}")
        body.append(f'<rect x="{x(f.started):.1f}" y="25" width="{w:.1f}" height="{height - 50}" fill="{color}" opacity="0.08"/>')
        body.append(f'<rect x="{x(f.started):.1f}" y="{30 + _LANE * i + 3}" width="{w:.1f}" height="{_LANE - 6}" fill="{color}"'
                    f' opacity="{0.3 if f.error else 0.85}"><title>{tip}</title></rect>')
    nodes = sorted({node for _, _, node in _leadership(timeline, end)})
    row = 30 + _LANE * lanes.index("leader")
    for a, b, node in _leadership(timeline, end):
        color = _PALETTE[nodes.index(node) % len(_PALETTE)]
        body.append(f'<rect x="{x(a):.1f}" y="{row + 3}" width="{max(x(b) - x(a), 1.0):.1f}" height="{_LANE - 6}" fill="{color}">'
                    f'<title>{html.escape(node)}</title></rect>')
    for p in timeline:
        if p.type in lanes:
            y = 30 + _LANE * lanes.index(p.type)
            body.append(f'<line x1="{x(p.t):.1f}" x2="{x(p.t):.1f}" y1="{y + 3}" y2="{y + _LANE - 3}" stroke="#333" stroke-width="1">'
                        f'<title>seq {p.seq} {p.type} {html.escape(p.node)}</title></line>')
    for k in range(11):
        t = start + span * k / 10
        body.append(f'<text x="{x(t):.1f}" y="{height - 8}" font-size="11" text-anchor="middle">{t - start:.0f}s</text>')
    legend = " ".join(f'<span style="color:{_PALETTE[i % len(_PALETTE)]}">&#9632; {html.escape(n)}</span>' for i, n in enumerate(nodes))
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><h3>{html.escape(title)}</h3>"
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" font-family="sans-serif">'
            + "".join(body) + f"</svg><p>leaders: {legend}</p>")
