"""Requests to responses: the seeds' endpoints and the dashboard's, served from the latest projections.

Runs in the HTTP server's threads. It reads only the keeper's immutable `current` and hands
the one write (POST /work/add) to the event loop through `add_work`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

import msgspec

from eventbus.errors import BusError
from eventbus.events import WorkAdded, utcnow
from eventbus.publisher import Published
from projections import work
from projections.status_view import StatusView, status_view, with_loops_down
from services.api import documents
from services.api.keeper import Current, ProjectionKeeper
from services.api.params import MAX_DIGITS, ascii_count
from services.api.settings import ApiSettings
from services.admission import AdmissionRules, InvalidWork, admitted, decode_seeds
from services.looplag import LoopLagStats

log = logging.getLogger(__name__)

JSON = "application/json"
FEED_LIMIT = 200  # events per /api/events answer


class Response(msgspec.Struct, frozen=True, kw_only=True):
    """What the HTTP layer writes back."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False  # close the connection afterwards (the request body was not read)


class BadRequest(Exception):
    """A request the client must change; the message names the field or parameter."""


def json_response(status: int, doc: msgspec.Struct) -> Response:
    """A JSON document as a response."""
    return Response(status=status, body=msgspec.json.encode(doc))


RETRY = (("Retry-After", "1"),)


def error(
    status: int, reason: str, *, headers: tuple[tuple[str, str], ...] = (), close: bool = False, work_id: str | None = None,
    field: str | None = None,
) -> Response:
    """A JSON {"error": reason} response."""
    doc = documents.ErrorDoc(error=reason, success=False, work_id=work_id, field=field)
    return Response(status=status, body=msgspec.json.encode(doc), headers=headers, close=close)


def _int_param(query: Mapping[str, str], name: str, default: int, *, maximum: int | None = None) -> int:
    text = query.get(name)
    if text is None:
        return default
    value = ascii_count(text)
    if value is None:
        raise BadRequest(f"{name}: expected a non-negative integer of at most {MAX_DIGITS} ASCII digits, got {text[:40]!r}")
    return min(value, maximum) if maximum is not None else value


Handler = Callable[[Mapping[str, str], bytes, str], Response]


class Api:
    """The route table and its handlers, over one keeper and the node's view of the bus."""

    def __init__(
        self, keeper: ProjectionKeeper, settings: ApiSettings, *, node_id: str, started: float,
        lag: Callable[[], LoopLagStats], connected: Callable[[], bool], add_work: Callable[[WorkAdded], Published],
        static: Mapping[str, tuple[str, bytes]], work_refusal: str | None = None, rules: AdmissionRules | None = None,
        free_bytes: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.keeper = keeper
        self.settings = settings
        self.node_id = node_id
        self.started = started  # time.monotonic() at start
        self.lag = lag
        self.connected = connected
        self.add_work = add_work
        self.static = static  # path -> (content type, bytes)
        self.work_refusal = work_refusal  # why this node's credentials may not append WORK_ADDED, if they may not
        self.rules = rules or AdmissionRules()  # what POST /work/add admits (services/admission.py)
        self.free_bytes = free_bytes  # free space on the data dir's filesystem (None: not measurable)
        self._cached_view: tuple[Current, int, StatusView] | None = None
        self.loops_down: dict[str, list[str]] = {}  # role -> its leader's loops not running (services/api/leaderhealth.py)
        self.routes: dict[str, dict[str, Handler]] = {
            "/status": {"GET": self.get_status},
            "/health": {"GET": self.get_health},
            "/peers": {"GET": self.get_peers},
            "/work/status": {"GET": self.get_work_status},
            "/work/add": {"POST": self.post_work_add},
            "/api/events": {"GET": self.get_events},
            "/api/elo": {"GET": self.get_elo},
        }

    def handle(self, method: str, target: str, body: bytes, client: str = "") -> Response:
        """The response to one request; never raises."""
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        if path in self.static:
            return self._static(method, self.static[path])
        methods = self.routes.get(path)
        if methods is None:
            return error(404, f"no such endpoint: {path}")
        handler = methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            return error(405, f"{method} is not allowed on {path}; use {allowed}", headers=(("Allow", allowed),))
        try:
            return handler(dict(parse_qsl(url.query)), body, client)
        except InvalidWork as exc:
            return error(400, str(exc), field=exc.field)
        except BadRequest as exc:
            return error(400, str(exc))
        except Exception:
            log.exception("api: %s %s failed", method, target)
            return error(500, "internal error; see the api service's log")

    def _static(self, method: str, page: tuple[str, bytes]) -> Response:
        if method not in ("GET", "HEAD"):
            return error(405, f"{method} is not allowed here; use GET", headers=(("Allow", "GET"),))
        return Response(status=200, body=page[1], content_type=page[0])

    def _view(self) -> StatusView:
        # One status view per folded state and wall-clock second, shared by every request that
        # asks within it: a dashboard per operator must not cost a full view each.
        current, now = self.keeper.current, utcnow()
        cached = self._cached_view
        if cached is not None and cached[0] is current and cached[1] == int(now.timestamp()):
            return cached[2]
        view = with_loops_down(status_view(current.state, now=now, node_id=self.node_id), self.loops_down)
        self._cached_view = (current, int(now.timestamp()), view)  # one assignment: safe across threads
        return view

    def set_loops_down(self, down: dict[str, list[str]]) -> None:
        """What the leaders' last lease renewals say is not running (one assignment: read by the HTTP threads)."""
        self.loops_down = down

    def _unready(self) -> Response | None:
        # Until the history that existed at start is folded, answers would describe the past.
        current = self.keeper.current
        if current.caught_up:
            return None
        reason = f"starting: folded the log to seq {current.state.last_seq} of {current.log_end_seq}; retry shortly"
        return error(503, reason, headers=RETRY)

    def get_status(self, query: Mapping[str, str], body: bytes, client: str) -> Response:
        """The seeds' GET /status: the same document as `rr status --json`."""
        return self._unready() or json_response(200, self._view())

    def get_health(self, query: Mapping[str, str], body: bytes, client: str) -> Response:
        """GET /health: 200 when NATS is connected and the API caught up, else 503, with the figures."""
        current = self.keeper.current
        doc = documents.health(
            state=current.state, caught_up=current.caught_up, log_end_seq=current.log_end_seq,
            snapshot_seq=current.snapshot_seq, events_folded=self.keeper.statistics().folded, node_id=self.node_id,
            uptime_s=time.monotonic() - self.started, nats_connected=self.connected(), lag=self.lag(),
            free_bytes=self.free_bytes(), min_free_mib=self.settings.min_free_mib,
        )
        return json_response(200 if doc.status == "ok" else 503, doc)

    def get_peers(self, query: Mapping[str, str], body: bytes, client: str) -> Response:
        """The seeds' GET /peers: every node with its state and resources."""
        return self._unready() or json_response(200, documents.peers(self._view()))

    def get_work_status(self, query: Mapping[str, str], body: bytes, client: str) -> Response:
        """The seeds' GET /work/status [?status=pending&limit=N]."""
        limit = _int_param(query, "limit", self.settings.work_items_shown, maximum=10_000)
        status = query.get("status")
        known = [s.value for s in work.WorkStatus]
        if status is not None and status not in known:
            raise BadRequest(f"status: expected one of {', '.join(known)}, got {status[:40]!r}")
        unready = self._unready()
        if unready is not None:
            return unready
        state = self.keeper.current.state
        return json_response(200, documents.work_status(state, limit=limit, status=work.WorkStatus(status) if status else None))

    def post_work_add(self, query: Mapping[str, str], body: bytes, client: str) -> Response:
        """The seeds' POST /work/add: admit (400 naming the field), append WORK_ADDED, answer {"success": true, "work_id": ...}."""
        event = admitted(decode_seeds(body), self.rules, requested_by=f"api:{self.node_id}")
        if self.work_refusal is not None:  # the server would refuse it: say why now, not after a timeout
            return error(403, f"nothing was added: {self.work_refusal}")
        if not self.connected():
            return error(503, "NATS is disconnected: nothing was added; retry once /health says ok", headers=RETRY)
        try:
            published = self.add_work(event)
        except BusError as exc:
            # The publish may sit in the client's buffer and reach the log after a reconnect: say so,
            # with the id to look for, rather than claim that nothing was added.
            reason = f"work {event.work_id} not confirmed: {exc}; it may still be added: look for it in /work/status before adding it again"
            return error(503, reason, headers=RETRY, work_id=event.work_id)
        log.info("api: %s added %s (%s %s_%dp) at seq %d", client or "a client", event.work_id, event.work_type,
                 event.board_type, event.num_players, published.seq)
        return json_response(200, documents.WorkAddedDoc(success=True, work_id=event.work_id, seq=published.seq))

    def get_events(self, query: Mapping[str, str], body: bytes, client: str) -> Response:
        """GET /api/events?after=SEQ[&limit=N]: the live feed's newest events after SEQ."""
        after = _int_param(query, "after", 0)
        limit = _int_param(query, "limit", FEED_LIMIT, maximum=FEED_LIMIT) or FEED_LIMIT
        current = self.keeper.current
        doc = documents.events_after(current.recent, after, limit=limit, last_seq=current.state.last_seq)
        return json_response(200, doc)

    def get_elo(self, query: Mapping[str, str], body: bytes, client: str) -> Response:
        """GET /api/elo: ratings per config for the dashboard's chart."""
        return self._unready() or json_response(200, documents.elo_chart(self.keeper.current.state))
