"""The cluster status as one document: the seeds' /status keys (leader_id, alive_peers, nodes) and more.

Pure: built from a ProjectionSet and a clock reading, so `rr status`, `rr replay` and the HTTP
API give the same shape.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import msgspec

from projections import cluster, data, elo, models, taint, workviews
from projections.base import Anomaly
from projections.bundle import ProjectionSet, total_anomalies, total_fenced

PRIMARY_ROLE = "scheduler"  # whose leader is the seeds' single `leader_id`
RECENT_ANOMALIES = 10


class NodeView(msgspec.Struct, frozen=True, kw_only=True):
    """One node as /status lists it."""

    node_id: str
    alive: bool
    status: str  # online | offline
    roles: list[str]
    version: str
    since: dt.datetime | None
    since_seq: int
    reason: str
    offline_count: int
    silence_s: float
    cpu_count: int
    memory_gb: float
    gpus: list[str]
    leads: list[str]  # roles this node leads now
    work: dict[str, int]  # its items now, by status (assigned, running)


class LeaderView(msgspec.Struct, frozen=True, kw_only=True):
    """Who leads a role (null: nobody), at which epoch, since when."""

    node: str | None
    epoch: int | None
    since: dt.datetime | None
    since_seq: int
    reason: str
    loops_down: list[str] = []  # the leader's loops not running, as its lease renewals report them (the api adds these)


class WorkView(msgspec.Struct, frozen=True, kw_only=True):
    """The queue: items per status, per node (active ones) and per config."""

    counts: dict[str, int]
    total: int
    by_node: dict[str, dict[str, int]]
    by_config: dict[str, dict[str, int]]


class ModelView(msgspec.Struct, frozen=True, kw_only=True):
    """The promoted model of one config and where it is installed."""

    model_id: str
    generation: int
    sha256: str
    promoted_at: dt.datetime | None
    promoted_seq: int
    nodes: list[str]
    distribution_complete: bool
    elo: float | None  # on the config's scale (random play = 0), from MODEL_RATED
    elo_interval: float | None = None  # half-width of its 95% interval
    taint: str = ""  # why it is quarantined ("" when it is not): the leader rolls it back


class DataView(msgspec.Struct, frozen=True, kw_only=True):
    """One config's game data and its freshness."""

    batches: int
    games: int
    samples: int
    newest_at: dt.datetime | None
    freshness_s: float | None


class StatusView(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `rr status --json` prints."""

    leader_id: str | None
    role: str  # the asking node's role, as the seeds' /status had it: leader | follower
    node_id: str
    alive_peers: int
    nodes: list[NodeView]
    leaders: dict[str, LeaderView]
    work: WorkView
    models: dict[str, ModelView]
    data: dict[str, DataView]
    transfers: dict[str, int]
    elo: dict[str, dict[str, float]]
    anomalies: int
    recent_anomalies: list[Anomaly]
    fenced_decisions: int
    last_seq: int
    as_of: dt.datetime


def leader_id(state: cluster.ClusterState, primary_role: str = PRIMARY_ROLE) -> str | None:
    """The primary role's leader, else the leader of the first role (by name) that has one."""
    primary = state.leaders.get(primary_role)
    if primary is not None:
        return primary.node
    for role in sorted(state.leaders):
        if state.leaders[role].node is not None:
            return state.leaders[role].node
    return None


def _node_view(node: cluster.NodeInfo, leads: list[str], active: dict[str, int]) -> NodeView:
    resources = node.resources
    return NodeView(
        node_id=node.node, alive=node.alive, status="online" if node.alive else "offline", roles=list(node.roles),
        version=node.version, since=node.since, since_seq=node.since_seq, reason=node.reason,
        offline_count=node.offline_count, silence_s=node.silence_s,
        cpu_count=resources.cpu_count if resources else 0, memory_gb=resources.memory_gb if resources else 0.0,
        gpus=[g.name for g in resources.gpus] if resources else [], leads=leads, work=active,
    )


def _interval(state: elo.EloState, model_id: str) -> float | None:
    rating = elo.scale_rating(state, model_id)
    return rating.interval if rating is not None else None


def _models(ps: ProjectionSet) -> dict[str, ModelView]:
    out: dict[str, ModelView] = {}
    tainted = taint.tainted(ps.taint).models
    for config, model in models.promoted_models(ps.models).items():
        promotion = model.promotion
        out[config] = ModelView(
            model_id=model.model_id, generation=promotion.generation if promotion else 0, sha256=model.sha256,
            promoted_at=promotion.at if promotion else None, promoted_seq=promotion.seq if promotion else 0,
            nodes=list(model.nodes), distribution_complete=model.distribution_complete,
            elo=elo.latest_elo(ps.elo, model.model_id), elo_interval=_interval(ps.elo, model.model_id),
            taint=tainted[model.model_id].describe() if model.model_id in tainted else "",
        )
    return out


def _data(state: data.DataState, now: dt.datetime) -> dict[str, DataView]:
    return {
        name: DataView(
            batches=c.batches, games=c.games, samples=c.samples, newest_at=c.newest_at,
            freshness_s=data.freshness_s(c, now),
        )
        for name, c in sorted(state.configs.items())
    }


def _recent_anomalies(ps: ProjectionSet) -> list[Anomaly]:
    every = [a for part in (ps.cluster, ps.work, ps.models, ps.data, ps.elo, ps) for a in part.anomalies]
    return sorted(every, key=lambda a: a.seq)[-RECENT_ANOMALIES:]


def status_view(ps: ProjectionSet, *, now: dt.datetime, node_id: str = "", primary_role: str = PRIMARY_ROLE) -> StatusView:
    """The status document of a projection set, as of `now` (data freshness is measured against it)."""
    leads: dict[str, list[str]] = {}
    for role, leader in sorted(ps.cluster.leaders.items()):
        if leader.node is not None:
            leads.setdefault(leader.node, []).append(role)
    active = workviews.by_node(ps.work)
    nodes = [_node_view(n, leads.get(n.node, []), active.get(n.node, {})) for _, n in sorted(ps.cluster.nodes.items())]
    leaders = {
        role: LeaderView(node=lead.node, epoch=lead.epoch, since=lead.since, since_seq=lead.since_seq, reason=lead.reason)
        for role, lead in sorted(ps.cluster.leaders.items())
    }
    counts = workviews.counts(ps.work)
    return StatusView(
        leader_id=leader_id(ps.cluster, primary_role), role="leader" if node_id in leads else "follower",
        node_id=node_id, alive_peers=cluster.alive_peers(ps.cluster), nodes=nodes, leaders=leaders,
        work=WorkView(counts=counts, total=sum(counts.values()), by_node=dict(sorted(active.items())),
                      by_config=dict(sorted(workviews.by_config(ps.work).items()))),
        models=_models(ps), data=_data(ps.data, now), transfers=dict(sorted(ps.data.transfer_counts.items())),
        elo=elo.by_config(ps.elo), anomalies=total_anomalies(ps), recent_anomalies=_recent_anomalies(ps),
        fenced_decisions=total_fenced(ps), last_seq=ps.last_seq, as_of=now,
    )


def with_loops_down(view: StatusView, down: Mapping[str, list[str]]) -> StatusView:
    """The view with each role's leader marked by the loops it reports not running (roles without a leader unchanged)."""
    leaders = {role: msgspec.structs.replace(lead, loops_down=list(down.get(role, [])) if lead.node is not None else [])
               for role, lead in view.leaders.items()}
    return msgspec.structs.replace(view, leaders=leaders)
