"""What each endpoint answers, over the latest projections: documents or an `ApiError`, no HTTP in sight.

`services/api/app.py` maps HTTP requests onto these methods. Everything here runs on the event
loop or (status views, which cost a fold's worth of CPU) in the server's worker threads; it reads
only the keeper's immutable `current`, and the one write (POST /work/add) goes through `add_work`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import msgspec

from config.sections.api import ApiSettings
from config.settings import RrConfig
from eventbus.consumerlag import ConsumerLag
from eventbus.errors import BusError, ConcurrencyConflict
from eventbus.events import Event, WorkAdded, WorkAttemptFailed, WorkCompleted, WorkStarted, utcnow
from eventbus.publisher import Published
from projections import work
from projections.status_view import LeaderView, StatusView, status_view, with_loops_down
from servicekit.admission import AdmissionRules, admitted
from servicekit.looplag import LoopLagStats
from servicekit.workrequest import InvalidWork, decode_seeds
from services.api import documents, fleetmetrics, leasecontrol, nodeadmin, nodework
from services.api.bodies import B, BadBody, decode_body
from services.api.control import NodeControl
from services.api.errors import RETRY, ApiError
from services.api.keeper import Current, ProjectionKeeper
from services.api.metrics import FleetMetrics
from services.api.params import MAX_DIGITS, ascii_count
from services.api.tokens import Principal, Refused, authenticate, authorize

log = logging.getLogger(__name__)

FEED_LIMIT = 200  # events per /api/events answer


def int_param(name: str, text: str | None, default: int, *, maximum: int | None = None) -> int:
    """A query parameter that must be a non-negative integer; a 400 naming it otherwise."""
    if text is None:
        return default
    value = ascii_count(text)
    if value is None:
        raise ApiError(400, f"{name}: expected a non-negative integer of at most {MAX_DIGITS} ASCII digits, got {text[:40]!r}")
    return min(value, maximum) if maximum is not None else value


def status_param(text: str | None) -> work.WorkStatus | None:
    """?status= of /work/status: one of the work states, or absent."""
    if text is None:
        return None
    known = [s.value for s in work.WorkStatus]
    if text not in known:
        raise ApiError(400, f"status: expected one of {', '.join(known)}, got {text[:40]!r}")
    return work.WorkStatus(text)


class LeadersDoc(msgspec.Struct, frozen=True, kw_only=True):
    """GET /election/status and /lease/status: who holds each role's leadership lease, at which epoch."""

    leader_id: str | None  # the scheduler's leader, as the seeds' /status names it
    node_id: str  # the node this API runs on
    role: str  # leader | follower: this node's, as the seeds had it
    leaders: dict[str, LeaderView]


def body_as(body: bytes, kind: type[B], *, empty_ok: bool = False) -> B:
    """A JSON request body as `kind`; a 400 naming the field otherwise."""
    try:
        return decode_body(body, kind, empty_ok=empty_ok)
    except BadBody as exc:
        raise ApiError(400, str(exc)) from None


class NodeLink(Protocol):
    """The bus as the work endpoints of HTTP-only nodes use it."""

    async def item_events(self, work_id: str) -> list[tuple[int, Event]]:
        """One work item's events in log order."""

    async def append(self, event: Event, expect_last_seq: int) -> Published:
        """Append if the item's last event is still `expect_last_seq`, then wait until it is folded."""


class Api:
    """The endpoints' logic over one keeper and the node's view of the bus."""

    def __init__(
        self, keeper: ProjectionKeeper, settings: ApiSettings, *, node_id: str, started: float,
        lag: Callable[[], LoopLagStats], connected: Callable[[], bool],
        add_work: Callable[[WorkAdded], Awaitable[Published]], work_refusal: str | None = None,
        node_link: NodeLink | None = None, tokens: Mapping[str, Principal] | None = None,
        config: RrConfig | None = None, metrics: FleetMetrics | None = None, rules: AdmissionRules | None = None,
        probe: Callable[[], Awaitable[tuple[dict[str, ConsumerLag], int | None]]] | None = None,
        free_bytes: Callable[[], int | None] = lambda: None, control: NodeControl | None = None,
    ) -> None:
        self.keeper = keeper
        self.settings = settings
        self.node_id = node_id
        self.started = started  # time.monotonic() at start
        self.lag = lag
        self.connected = connected
        self.add_work = add_work
        self.work_refusal = work_refusal  # why this node's credentials may not append WORK_ADDED, if they may not
        self.node_link = node_link  # what the work endpoints of HTTP-only nodes read and append through
        self.tokens = tokens  # token SHA-256 -> principal (api.tokens_file); None: none configured
        self.config = config  # the effective RrConfig, for GET /admin/config
        self.rules = rules or AdmissionRules()  # what POST /work/add admits (servicekit/admission.py)
        self.metrics = metrics if metrics is not None else FleetMetrics()
        self.probe = probe  # the server's view: durable consumers' lag and dead letters
        self.free_bytes = free_bytes  # free space on the data dir's filesystem (None: not measurable)
        self.control = control or NodeControl(node_id=node_id)  # election/start, lease/request, admin/shutdown|reset
        self._cached_view: tuple[Current, int, StatusView] | None = None
        self.loops_down: dict[str, list[str]] = {}  # role -> its leader's loops not running (services/api/leaderhealth.py)

    def view(self) -> StatusView:
        """The status view of the latest state, shared by every request within one wall-clock second."""
        # A dashboard per operator must not cost a full view each.
        current, now = self.keeper.current, utcnow()
        cached = self._cached_view
        if cached is not None and cached[0] is current and cached[1] == int(now.timestamp()):
            return cached[2]
        view = with_loops_down(status_view(current.state, now=now, node_id=self.node_id), self.loops_down)
        self._cached_view = (current, int(now.timestamp()), view)  # one assignment: safe across threads
        return view

    def set_loops_down(self, down: dict[str, list[str]]) -> None:
        """What the leaders' last lease renewals say is not running (one assignment: read by the worker threads)."""
        self.loops_down = down

    def require_ready(self) -> Current:
        """The latest state, or a 503 until the history that existed at start is folded."""
        # Before that, answers would describe the past.
        current = self.keeper.current
        if not current.caught_up:
            reason = f"starting: folded the log to seq {current.state.last_seq} of {current.log_end_seq}; retry shortly"
            raise ApiError(503, reason, headers=RETRY)
        return current

    def status(self) -> StatusView:
        """The seeds' GET /status: the same document as `rr status --json`."""
        self.require_ready()
        return self.view()

    def health(self) -> documents.HealthDoc:
        """GET /health: the figures; its status says ok only when connected and caught up."""
        current = self.keeper.current
        return documents.health(
            state=current.state, caught_up=current.caught_up, log_end_seq=current.log_end_seq,
            snapshot_seq=current.snapshot_seq, events_folded=self.keeper.statistics().folded, node_id=self.node_id,
            uptime_s=time.monotonic() - self.started, nats_connected=self.connected(), lag=self.lag(),
            free_bytes=self.free_bytes(), min_free_mib=self.settings.min_free_mib,
        )

    def peers(self) -> documents.PeersDoc:
        """The seeds' GET /peers: every node with its state and resources."""
        self.require_ready()
        return documents.peers(self.view())

    def work_status(self, *, limit: str | None, status: str | None) -> documents.WorkStatusDoc:
        """The seeds' GET /work/status [?status=pending&limit=N]."""
        count = int_param("limit", limit, self.settings.work_items_shown, maximum=10_000)
        wanted = status_param(status)
        state = self.require_ready().state
        return documents.work_status(state, limit=count, status=wanted)

    def events(self, *, after: str | None, limit: str | None) -> documents.EventsDoc:
        """GET /api/events?after=SEQ[&limit=N]: the live feed's newest events after SEQ."""
        since = int_param("after", after, 0)
        count = int_param("limit", limit, FEED_LIMIT, maximum=FEED_LIMIT) or FEED_LIMIT
        current = self.keeper.current
        return documents.events_after(current.recent, since, limit=count, last_seq=current.state.last_seq)

    def elo(self) -> documents.EloDoc:
        """GET /api/elo: ratings per config for the dashboard's chart."""
        return documents.elo_chart(self.require_ready().state)

    def principal(self, authorization: str | None) -> Principal:
        """Who sends a request, by its bearer token; 401 when it has none or an unknown one."""
        try:
            return authenticate(authorization, self.tokens)
        except Refused as exc:
            raise ApiError(exc.status, exc.reason, headers=(("WWW-Authenticate", "Bearer"),)) from None

    async def prometheus(self) -> bytes:
        """GET /metrics: the fleet's vital signs in the Prometheus text format."""
        consumers, dead_letters = await self.probe() if self.probe is not None and self.connected() else ({}, None)
        current = self.keeper.current
        view = await asyncio.to_thread(self.view)  # a status view costs a fold's worth of CPU
        return self.metrics.render(fleetmetrics.gauges(current.state, view, self.lag(), consumers, dead_letters))

    def leaders(self) -> LeadersDoc:
        """GET /election/status and /lease/status: each role's leader (its KV lease's holder) and epoch."""
        view = self.status()
        return LeadersDoc(leader_id=view.leader_id, node_id=view.node_id, role=view.role, leaders=view.leaders)

    def effective_config(self, authorization: str | None) -> RrConfig:
        """GET /admin/config: this node's effective configuration, for admins only."""
        principal = self.principal(authorization)
        if principal.role != "admin":
            raise ApiError(403, f"{principal.user} (role {principal.role}) may not read the config; use an admin token")
        if self.config is None:
            raise ApiError(503, "the configuration is not known to this API")
        return self.config

    def for_node(self, node_id: str) -> nodework.ForNodeDoc:
        """GET /work/for-node/{node_id}: the attempts that hold that node now."""
        state = self.require_ready().state
        items = [documents.item_view(i) for i in nodework.on_node(state.work, node_id)]
        return nodework.ForNodeDoc(node_id=node_id, items=items, last_seq=state.last_seq)

    async def election_start(self, authorization: str | None, body: bytes) -> leasecontrol.ElectionStartDoc:
        """POST /election/start: the role's leader is asked to step down (its lease deleted at its revision)."""
        principal = self.principal(authorization)
        return await self.control.election_start(principal, body_as(body, leasecontrol.ElectionStartBody, empty_ok=True))

    async def lease_request(self, authorization: str | None, body: bytes) -> tuple[int, leasecontrol.LeaseRequestDoc]:
        """POST /lease/request: whether the node may lead the role and holds its lease."""
        principal = self.principal(authorization)
        return await self.control.lease_request(principal, body_as(body, leasecontrol.LeaseRequestBody, empty_ok=True))

    async def shutdown(self, authorization: str | None, body: bytes) -> nodeadmin.ShutdownDoc:
        """POST /admin/shutdown: drain this node and stop it (rr up exits 0)."""
        principal = self.principal(authorization)
        request = body_as(body, nodeadmin.ShutdownBody)
        return await self.control.shutdown(principal, request, self.require_ready().state.work)

    async def reset(self, authorization: str | None, body: bytes) -> nodeadmin.ResetDoc:
        """POST /admin/reset: remove this node's refetchable and never-counting files, unless it holds work."""
        principal = self.principal(authorization)
        request = body_as(body, nodeadmin.ResetBody)
        return await self.control.reset(principal, request, self.require_ready().state.work)

    async def claim(self, authorization: str | None, body: bytes) -> nodework.ClaimDoc:
        """POST /work/claim: start the oldest attempt the leader assigned to the node (WORK_STARTED as that node)."""
        principal = self.principal(authorization)
        request = body_as(body, nodework.ClaimBody, empty_ok=True)
        node = request.node_id or principal.user
        item = nodework.claimable(self.require_ready().state.work, node)
        if item is None:
            return nodework.ClaimDoc(success=True, work=None)
        published = await self._report(principal, nodework.started(item, node))
        claimed = self.keeper.current.state.work.items.get(item.work_id, item)
        return nodework.ClaimDoc(success=True, work=documents.item_view(claimed), seq=published.seq)

    async def complete(self, authorization: str | None, body: bytes) -> nodework.ReportDoc:
        """POST /work/complete: the node's attempt succeeded (WORK_COMPLETED as that node), once."""
        principal = self.principal(authorization)
        request = body_as(body, nodework.CompleteBody)
        return await self._report_doc(principal, nodework.completed(request, request.node_id or principal.user))

    async def fail(self, authorization: str | None, body: bytes) -> nodework.ReportDoc:
        """POST /work/fail: the node's attempt failed (WORK_ATTEMPT_FAILED as that node)."""
        principal = self.principal(authorization)
        request = body_as(body, nodework.FailBody)
        return await self._report_doc(principal, nodework.failed(request, request.node_id or principal.user))

    async def _report_doc(self, principal: Principal, event: WorkCompleted | WorkAttemptFailed) -> nodework.ReportDoc:
        published = await self._report(principal, event)
        item = self.keeper.current.state.work.items.get(event.work_id)
        status = item.status.value if item is not None and item.updated_seq >= published.seq else "unknown"
        return nodework.ReportDoc(success=True, work_id=event.work_id, attempt=event.attempt, status=status, seq=published.seq)

    async def _report(self, principal: Principal, event: WorkStarted | WorkCompleted | WorkAttemptFailed) -> Published:
        """Append a node's report if the item, folded fresh from its own events, takes it and has not moved since."""
        try:
            authorize(principal, node=event.node, type_name=event.type_name())
        except Refused as exc:
            raise ApiError(exc.status, exc.reason) from None
        link = self.node_link
        if link is None or not self.connected():
            raise ApiError(503, "NATS is disconnected: nothing was reported; retry once /health says ok", headers=RETRY)
        try:
            history = await link.item_events(event.work_id)
            if (why := nodework.problem(nodework.fold_item(history), event, event.work_id)) is not None:
                raise ApiError(404 if why.startswith("work_id:") else 409, why)
            return await link.append(event, max((seq for seq, _ in history), default=0))
        except ConcurrencyConflict:
            raise ApiError(409, f"work item {event.work_id} changed while this was judged; read /work/for-node and retry") from None
        except BusError as exc:
            raise ApiError(503, f"{event.type_name()} of {event.work_id} not confirmed: {exc}; retry with the same body", headers=RETRY) from None

    async def work_add(self, body: bytes, client: str, authorization: str | None = None) -> documents.WorkAddedDoc:
        """The seeds' POST /work/add: validate, append WORK_ADDED, answer {"success": true, "work_id": ...}."""
        if self.tokens is not None:  # once tokens are configured, adding work needs one too
            try:
                authorize(self.principal(authorization), node=None, type_name=WorkAdded.type_name())
            except Refused as exc:
                raise ApiError(exc.status, exc.reason) from None
        try:
            event = admitted(decode_seeds(body), self.rules, requested_by=f"api:{self.node_id}")
        except InvalidWork as exc:  # names the field
            raise ApiError(400, str(exc), field=exc.field) from None
        if self.work_refusal is not None:  # the server would refuse it: say why now, not after a timeout
            raise ApiError(403, f"nothing was added: {self.work_refusal}")
        if not self.connected():
            raise ApiError(503, "NATS is disconnected: nothing was added; retry once /health says ok", headers=RETRY)
        try:
            published = await self.add_work(event)
        except BusError as exc:
            # The publish may sit in the client's buffer and reach the log after a reconnect: say so,
            # with the id to look for, rather than claim that nothing was added.
            reason = f"work {event.work_id} not confirmed: {exc}; it may still be added: look for it in /work/status before adding it again"
            raise ApiError(503, reason, headers=RETRY, work_id=event.work_id) from None
        log.info("api: %s added %s (%s %s_%dp) at seq %d", client or "a client", event.work_id, event.work_type,
                 event.board_type, event.num_players, published.seq)
        return documents.WorkAddedDoc(success=True, work_id=event.work_id, seq=published.seq)
