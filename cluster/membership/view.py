"""The nodes as `rr nodes` shows them, pure: the log's last word on each node joined with its newest beat."""

from __future__ import annotations

import datetime as dt

import msgspec

from eventbus.events import GpuInfo
from eventbus.heartbeats import RunningJob, StoredBeat
from projections.cluster import NodeInfo


class NodeRow(msgspec.Struct, frozen=True, kw_only=True):
    """One node: membership from the log, health and resources from its newest heartbeat."""

    node: str
    status: str  # online | offline | unannounced (beats, but no leader has said online yet)
    since: dt.datetime | None  # of the last transition in the log
    reason: str
    roles: list[str]
    version: str
    last_beat: dt.datetime | None  # when the server stored the newest beat
    last_beat_age_s: float | None
    beating: bool  # the newest beat is within the offline silence
    leaving: bool  # the newest beat said goodbye
    interval_s: float | None
    cpu_count: int
    cpu_percent: float | None
    memory_gb: float | None
    memory_percent: float | None
    disk_free_gb: float | None
    gpus: list[GpuInfo]
    jobs: list[RunningJob]
    loop_lag_s: float | None
    loop_lag_max_s: float | None
    lagging: bool  # the agent's loop lag is over the threshold


def node_rows(
    nodes: dict[str, NodeInfo], beats: list[StoredBeat], *, now: dt.datetime, silence_s: float, lag_threshold_s: float
) -> list[NodeRow]:
    """One row per node known to the log or to the telemetry, by node id."""
    by_node = {b.beat.node: b for b in beats}
    return [
        _row(name, nodes.get(name), by_node.get(name), now, silence_s, lag_threshold_s)
        for name in sorted(set(nodes) | set(by_node))
    ]


def _row(
    name: str, info: NodeInfo | None, stored: StoredBeat | None, now: dt.datetime, silence_s: float, lag_threshold_s: float
) -> NodeRow:
    beat = stored.beat if stored else None
    age = max(0.0, (now - stored.stored_at).total_seconds()) if stored else None
    resources = beat.resources if beat else (info.resources if info else None)
    status = "unannounced" if info is None else ("online" if info.alive else "offline")
    return NodeRow(
        node=name, status=status, since=info.since if info else None, reason=info.reason if info else "",
        roles=list(beat.roles if beat else info.roles if info else []),
        version=beat.version if beat else (info.version if info else ""),
        last_beat=stored.stored_at if stored else None,
        last_beat_age_s=round(age, 3) if age is not None else None,
        beating=age is not None and age <= silence_s and not (beat and beat.leaving),
        leaving=bool(beat and beat.leaving),
        interval_s=beat.interval_s if beat else None,
        cpu_count=resources.cpu_count if resources else 0,
        cpu_percent=resources.cpu_percent if beat and resources else None,
        memory_gb=resources.memory_gb if resources else None,
        memory_percent=resources.memory_percent if beat and resources else None,
        disk_free_gb=resources.disk_free_gb if beat and resources else None,
        gpus=list(resources.gpus) if resources else [],
        jobs=list(beat.jobs) if beat else [],
        loop_lag_s=beat.loop_lag_s if beat else None,
        loop_lag_max_s=beat.loop_lag_max_s if beat else None,
        lagging=bool(beat and beat.loop_lag_s > lag_threshold_s),
    )
