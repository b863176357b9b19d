"""The API's JSON documents, built purely from the projections (no I/O, no clock of their own).

Field names follow the seeds' HTTP API where it had one (leader_id, alive_peers, nodes,
work_id, success); /status itself is `projections.status_view`, the same as `rr status --json`.
"""

from __future__ import annotations

import datetime as dt
import heapq

import msgspec

from eventbus.errors import InvalidEvent
from eventbus.history import Record
from eventbus.integrity import decode_on
from projections import elo, work, workviews
from projections.base import type_of
from projections.bundle import ProjectionSet
from projections.sentences import sentence
from projections.status_view import NodeView, StatusView
from servicekit.looplag import LoopLagStats

ELO_POINTS_PER_CONFIG = 500  # the chart's newest ratings per config


class HealthDoc(msgspec.Struct, frozen=True, kw_only=True):
    """GET /health: 'ok' only when NATS is connected and the history at start has been folded."""

    status: str  # ok | catching_up | low_disk | nats_disconnected
    node_id: str
    uptime_s: float
    nats_connected: bool
    caught_up: bool
    last_seq: int  # the last event folded
    log_end_seq: int  # the log's end when this API started (the catch-up target)
    snapshot_seq: int
    events_folded: int
    loop_lag_s: float
    loop_lag_max_s: float
    storage_free_mib: float | None = None  # free space where the data dir is, when measurable
    reason: str = ""  # why the status is not ok, in a sentence


class PeersDoc(msgspec.Struct, frozen=True, kw_only=True):
    """GET /peers: every node the log has seen, alive or not."""

    leader_id: str | None
    alive_peers: int
    total: int
    peers: list[NodeView]


class ItemView(msgspec.Struct, frozen=True, kw_only=True):
    """One work item as /work/status lists it."""

    work_id: str
    work_type: str
    config: str
    board_type: str
    num_players: int
    num_games: int
    priority: int | None
    status: str
    attempt: int
    node: str | None
    progress: float | None
    reason: str
    added_seq: int
    added_at: dt.datetime | None
    updated_seq: int
    updated_at: dt.datetime | None
    cause: str = ""  # the last failed attempt's cause (its job's last exception line)
    unschedulable: str = ""  # while pending: why no alive node can run it
    unschedulable_since: dt.datetime | None = None


class WorkStatusDoc(msgspec.Struct, frozen=True, kw_only=True):
    """GET /work/status: counts by state, per node and per config, and the most recently changed items."""

    counts: dict[str, int]
    total: int
    by_node: dict[str, dict[str, int]]
    by_config: dict[str, dict[str, int]]
    items: list[ItemView]  # newest change first, at most `limit`
    items_matching: int  # items of the asked status (all of them without ?status=)
    last_seq: int


class FeedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the live feed, with the sentence `rr timeline` would print for it."""

    seq: int
    type: str
    about: str
    source: str
    ts: dt.datetime | None
    epoch: int | None
    text: str
    subject: str


class EventsDoc(msgspec.Struct, frozen=True, kw_only=True):
    """GET /api/events?after=SEQ: the newest events after SEQ (from an in-memory ring of the latest)."""

    events: list[FeedEvent]  # oldest first
    last_seq: int  # the last event folded: pass it as ?after= next time
    oldest_seq: int  # the oldest event still in the ring; 0 when it is empty


class EloPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One player's rating on its config's scale (random play = 0), for the Elo chart."""

    seq: int
    at: dt.datetime | None
    model_id: str
    elo: float
    interval: float  # half-width of the 95% interval
    games: int
    kind: str  # candidate, anchor or tournament
    generation: int | None  # set when the model was promoted: the chart's line; None: a rejected candidate's mark


class EloDoc(msgspec.Struct, frozen=True, kw_only=True):
    """GET /api/elo: every config's ratings in log order and its promoted model."""

    configs: dict[str, list[EloPoint]]
    promoted: dict[str, str]
    last_seq: int


class WorkAddedDoc(msgspec.Struct, frozen=True, kw_only=True):
    """POST /work/add's answer, as the seeds' clients read it (success, work_id), plus the log position."""

    success: bool
    work_id: str
    seq: int
    status: str = "pending"


class ErrorDoc(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Any 4xx/5xx answer: what was wrong, naming the field or parameter."""

    error: str
    success: bool  # always false; the seeds' clients test it
    work_id: str | None = None  # an unconfirmed POST /work/add: the id it may still appear under
    field: str | None = None  # a refused POST /work/add: the request field to change


def health(
    *, state: ProjectionSet, caught_up: bool, log_end_seq: int, snapshot_seq: int, events_folded: int,
    node_id: str, uptime_s: float, nats_connected: bool, lag: LoopLagStats,
    free_bytes: int | None = None, min_free_mib: int = 0,
) -> HealthDoc:
    """The health document; its status is 'ok' only when connected, caught up and with room on the data dir."""
    free_mib = None if free_bytes is None else free_bytes / (1 << 20)
    low = free_mib is not None and free_mib < min_free_mib
    status = ("nats_disconnected" if not nats_connected else "low_disk" if low
              else "ok" if caught_up else "catching_up")
    reason = {
        "nats_disconnected": "NATS is disconnected",
        "low_disk": f"the data dir's filesystem has {free_mib or 0:.1f} MiB free, under api.min_free_mib={min_free_mib}: "
                    "free space (the JetStream store stops writing when it is full)",
        "catching_up": "still folding the log",
    }.get(status, "")
    return HealthDoc(
        storage_free_mib=None if free_mib is None else round(free_mib, 1), reason=reason,
        status=status, node_id=node_id, uptime_s=round(uptime_s, 3), nats_connected=nats_connected,
        caught_up=caught_up, last_seq=state.last_seq, log_end_seq=log_end_seq, snapshot_seq=snapshot_seq,
        events_folded=events_folded, loop_lag_s=round(lag.last_s, 4), loop_lag_max_s=round(lag.max_s, 4),
    )


def peers(view: StatusView) -> PeersDoc:
    """The nodes of a status view, with the seeds' leader and alive counts."""
    return PeersDoc(leader_id=view.leader_id, alive_peers=view.alive_peers, total=len(view.nodes), peers=view.nodes)


def item_view(item: work.WorkItem) -> ItemView:
    """A work item for JSON, with its config spelled out."""
    return ItemView(
        work_id=item.work_id, work_type=item.work_type, config=item.config, board_type=item.board_type,
        num_players=item.num_players, num_games=item.num_games, priority=item.priority, status=item.status.value,
        attempt=item.attempt, node=item.node, progress=item.progress, reason=item.reason, added_seq=item.added_seq,
        added_at=item.added_at, updated_seq=item.updated_seq, updated_at=item.updated_at, cause=item.cause,
        unschedulable=item.unschedulable, unschedulable_since=item.unschedulable_since,
    )


def work_status(state: ProjectionSet, *, limit: int, status: work.WorkStatus | None = None) -> WorkStatusDoc:
    """The queue's counts and its `limit` most recently changed items (of one status, when given)."""
    items = state.work.items.values()
    matching = [i for i in items if i.status is status] if status is not None else list(items)
    newest = heapq.nlargest(limit, matching, key=lambda i: i.updated_seq)
    counts = workviews.counts(state.work)
    return WorkStatusDoc(
        counts=counts, total=sum(counts.values()), by_node=dict(sorted(workviews.by_node(state.work).items())),
        by_config=dict(sorted(workviews.by_config(state.work).items())), items=[item_view(i) for i in newest],
        items_matching=len(matching), last_seq=state.last_seq,
    )


def feed_event(record: Record) -> FeedEvent:
    """A stored record as a feed line; an undecodable one says so instead of failing the page."""
    try:
        event = decode_on(record.subject, record.data, record.headers)
    except InvalidEvent as exc:
        return FeedEvent(
            seq=record.seq, type=type_of(record.subject) or "?", about="", source="", ts=None, epoch=None,
            text=f"undecodable: {exc}", subject=record.subject,
        )
    return FeedEvent(
        seq=record.seq, type=event.type_name(), about=event.aggregate_id(), source=event.source, ts=event.ts,
        epoch=event.epoch, text=sentence(event), subject=record.subject,
    )


def events_after(recent: tuple[Record, ...], after: int, *, limit: int, last_seq: int) -> EventsDoc:
    """The newest `limit` events of `recent` with a sequence above `after`, oldest first.

    `recent` holds every event up to `last_seq` (but the evicted oldest), so a client that asks
    again with ?after=<last_seq> misses nothing still in the ring; an `after` beyond `last_seq`
    (an API restarted on a shorter log) gets the current position back and starts over from it.
    """
    newer = [r for r in recent if r.seq > after][-limit:]
    return EventsDoc(events=[feed_event(r) for r in newer], last_seq=last_seq, oldest_seq=recent[0].seq if recent else 0)


def elo_chart(state: ProjectionSet) -> EloDoc:
    """Every rated player's rating grouped by config, in log order (the newest points per config)."""
    configs: dict[str, list[EloPoint]] = {}
    for model_id, r in elo.scale_ratings(state.elo).items():
        model = state.models.models.get(model_id)
        promotion = model.promotion if model is not None else None
        configs.setdefault(state.elo.configs.get(model_id, ""), []).append(EloPoint(
            seq=r.seq, at=r.at, model_id=model_id, elo=r.elo, interval=r.interval, games=r.games, kind=r.kind,
            generation=promotion.generation if promotion is not None else None,
        ))
    ordered = {c: sorted(p, key=lambda p: p.seq)[-ELO_POINTS_PER_CONFIG:] for c, p in sorted(configs.items()) if p}
    return EloDoc(configs=ordered, promoted=dict(sorted(state.models.promoted.items())), last_seq=state.last_seq)

