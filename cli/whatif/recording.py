"""The scheduler's recorded inputs in a window, pure: node availability, work added, job durations, assignments."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import msgspec

from eventbus.events import (
    Event,
    HostOffline,
    HostOnline,
    WorkAdded,
    WorkAssigned,
    WorkCompleted,
    WorkStarted,
)


class NodeSpan(msgspec.Struct, frozen=True, kw_only=True):
    """A node's time online: from `start` to `end` seconds after the window began (end None: to the window's end)."""

    node: str
    start: float
    end: float | None
    roles: tuple[str, ...] = ("mixed",)
    vram_gb: float = 0.0


class Arrival(msgspec.Struct, frozen=True, kw_only=True):
    """One work item added, `at` seconds into the window."""

    work_id: str
    work_type: str
    board_type: str
    num_players: int
    at: float
    priority: int | None = None
    target_node: str | None = None
    order: int = 0


class Recording(msgspec.Struct, frozen=True, kw_only=True):
    """A recorded window: its inputs, and what the real scheduler did with them (first node, seconds in)."""

    start: dt.datetime
    seconds: float
    nodes: list[NodeSpan]
    arrivals: list[Arrival]
    durations: dict[str, float]  # work id -> seconds its completed attempt ran
    assigned: dict[str, tuple[str, float]]  # work id -> (node, seconds into the window) of its first assignment
    completed: dict[str, float]  # work id -> seconds into the window it completed


def _gpu_gb(event: HostOnline) -> float:
    gpus = event.resources.gpus if event.resources else []
    return max((g.memory_gb for g in gpus), default=0.0)


def record(events: Iterable[tuple[int, Event]], start: dt.datetime, end: dt.datetime) -> Recording:
    """The window [start, end) of a log in order; nodes online before it count from its start, times online wholly before it not at all."""
    def at(event: Event) -> float:
        return max(0.0, ((event.ts or start) - start).total_seconds())

    online: dict[str, NodeSpan] = {}
    spans: list[NodeSpan] = []
    arrivals: list[Arrival] = []
    started: dict[str, float] = {}
    durations: dict[str, float] = {}
    assigned: dict[str, tuple[str, float]] = {}
    completed: dict[str, float] = {}
    for seq, event in events:
        if event.ts is not None and event.ts >= end:
            break
        if isinstance(event, HostOnline):
            online[event.node] = NodeSpan(node=event.node, start=at(event), end=None,
                                          roles=tuple(event.roles) or ("mixed",), vram_gb=_gpu_gb(event))
        elif isinstance(event, HostOffline) and event.node in online:
            span = msgspec.structs.replace(online.pop(event.node), end=at(event))
            # A time online of no length in the window (wholly before it) ran nothing; kept, its end would take
            # the node down at the window's start in the simulation even when it had come back before.
            if span.end != span.start:
                spans.append(span)
        elif event.ts is None or event.ts < start:
            continue
        elif isinstance(event, WorkAdded):
            arrivals.append(Arrival(work_id=event.work_id, work_type=event.work_type, board_type=event.board_type,
                                    num_players=event.num_players, at=at(event), priority=event.priority,
                                    target_node=event.target_node, order=seq))
        elif isinstance(event, WorkAssigned):
            assigned.setdefault(event.work_id, (event.node, at(event)))
        elif isinstance(event, WorkStarted):
            started[f"{event.work_id}#{event.attempt}"] = at(event)
        elif isinstance(event, WorkCompleted):
            began = started.get(f"{event.work_id}#{event.attempt}")
            durations[event.work_id] = event.duration_s or (at(event) - began if began is not None else 0.0)
            completed[event.work_id] = at(event)
    spans += online.values()
    return Recording(start=start, seconds=(end - start).total_seconds(), nodes=sorted(spans, key=lambda s: (s.start, s.node)),
                     arrivals=arrivals, durations=durations, assigned=assigned, completed=completed)
