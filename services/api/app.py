"""The HTTP surface as a Litestar app: each endpoint a typed handler, so /openapi.json comes from the same types.

Handlers only read the request's parameters and call `routes.Api`; every answer that is not a
document is an `ErrorDoc` on one line (the exception handlers below), never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException, ValidationException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.params import FromPath, FromQuery
from litestar.response import ServerSentEvent, ServerSentEventMessage

from config.settings import RrConfig
from projections.status_view import StatusView
from servicekit.workrequest import WorkSeeds
from services.api import documents, leasecontrol, nodeadmin, nodework
from services.api.errors import ApiError
from services.api.metrics import CONTENT_TYPE as METRICS_TYPE
from services.api.routes import FEED_LIMIT, Api, LeadersDoc, int_param

log = logging.getLogger(__name__)

JSON = "application/json"
STREAM_IDLE_S = 15.0  # a comment line this often keeps idle proxies from closing the event stream
API_VERSION = "1"


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    return {status: ResponseSpec(data_container=documents.ErrorDoc, description="what was wrong, naming the field") for status in statuses}


def error_response(status: int, reason: str, headers: Mapping[str, str] | None = None, work_id: str | None = None) -> Response[bytes]:
    """A one-line JSON {"error": reason, "success": false}."""
    body = msgspec.json.encode(documents.ErrorDoc(error=reason, success=False, work_id=work_id))
    return Response(body, status_code=status, media_type=JSON, headers=dict(headers or {}))


def _api_error(request: Request[Any, Any, State], exc: ApiError) -> Response[bytes]:
    return Response(msgspec.json.encode(exc.document()), status_code=exc.status, media_type=JSON, headers=dict(exc.headers))


def _http_error(request: Request[Any, Any, State], exc: HTTPException) -> Response[bytes]:
    path, method = request.url.path, request.method
    if isinstance(exc, NotFoundException):
        return error_response(404, f"no such endpoint: {path[:200]}")
    if isinstance(exc, MethodNotAllowedException):
        # Litestar answers OPTIONS on every path itself; the client wants the method that does the job.
        methods = (exc.headers or {}).get("allow", "").replace(" ", "").split(",")
        allowed = ", ".join(sorted(m for m in methods if m not in ("OPTIONS", "")))
        reason = f"{method} is not allowed on {path[:200]}; use {allowed}"
        return error_response(405, reason, {"Allow": allowed})
    if exc.status_code == 413:
        length = request.headers.get("content-length", "?")
        limit = request.app.request_max_body_size
        return error_response(413, f"body of {length[:20]} bytes is over the limit of {limit} bytes", {"Connection": "close"})
    if isinstance(exc, ValidationException):
        problems = [f"{e.get('key', '?')}: {e.get('message', '')}" for e in exc.extra or [] if isinstance(e, dict)]
        return error_response(400, "; ".join(problems) or str(exc.detail))
    return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))


def _internal_error(request: Request[Any, Any, State], exc: Exception) -> Response[bytes]:
    log.error("api: %s %s failed: %s: %s", request.method, request.url.path[:200], type(exc).__name__, exc, exc_info=exc)
    return error_response(500, "internal error; see the api service's log")


# ---- the seeds' endpoints -----------------------------------------------------------------------------


@get("/status", sync_to_thread=True, responses=_errors(503))
def get_status(api: NamedDependency[Api]) -> StatusView:
    """The seeds' GET /status: the same document as `rr status --json`."""
    return api.status()


@get("/health", responses={503: ResponseSpec(data_container=documents.HealthDoc, description="not connected, catching up or low on disk")})
async def get_health(api: NamedDependency[Api]) -> Response[documents.HealthDoc]:
    """200 when NATS is connected and the API has folded the history it started with, else 503."""
    doc = api.health()
    return Response(doc, status_code=200 if doc.status == "ok" else 503)


@get("/peers", sync_to_thread=True, responses=_errors(503))
def get_peers(api: NamedDependency[Api]) -> documents.PeersDoc:
    """The seeds' GET /peers: every node the log has seen, alive or not."""
    return api.peers()


@get("/work/status", sync_to_thread=True, responses=_errors(400, 503))
def get_work_status(api: NamedDependency[Api], status: FromQuery[str | None] = None, limit: FromQuery[str | None] = None) -> documents.WorkStatusDoc:
    """The queue's counts and its most recently changed items: ?status=pending|assigned|..., ?limit=N."""
    return api.work_status(limit=limit, status=status)


@post("/work/add", status_code=200, responses=_errors(400, 401, 403, 413, 503), opt={"body": WorkSeeds})
async def post_work_add(api: NamedDependency[Api], request: Request[Any, Any, State]) -> documents.WorkAddedDoc:
    """The seeds' POST /work/add: appends WORK_ADDED and answers once it is in the log (and folded)."""
    body = await request.body()
    return await api.work_add(body, request.client.host if request.client else "", _auth(request))


def _auth(request: Request[Any, Any, State]) -> str | None:
    return request.headers.get("authorization")


AUTH_ERRORS = _errors(400, 401, 403, 404, 409, 503)


@post("/work/claim", status_code=200, responses=AUTH_ERRORS, opt={"body": nodework.ClaimBody, "auth": True})
async def post_work_claim(api: NamedDependency[Api], request: Request[Any, Any, State]) -> nodework.ClaimDoc:
    """An HTTP-only node starts the oldest attempt assigned to it (WORK_STARTED as that node); work is null when none."""
    return await api.claim(_auth(request), await request.body())


@post("/work/complete", status_code=200, responses=AUTH_ERRORS, opt={"body": nodework.CompleteBody, "auth": True})
async def post_work_complete(api: NamedDependency[Api], request: Request[Any, Any, State]) -> nodework.ReportDoc:
    """The node's attempt succeeded: WORK_COMPLETED as that node, appended once (409 for a stale or repeated one)."""
    return await api.complete(_auth(request), await request.body())


@post("/work/fail", status_code=200, responses=AUTH_ERRORS, opt={"body": nodework.FailBody, "auth": True})
async def post_work_fail(api: NamedDependency[Api], request: Request[Any, Any, State]) -> nodework.ReportDoc:
    """The node's attempt failed: WORK_ATTEMPT_FAILED as that node; the leader may try the item again."""
    return await api.fail(_auth(request), await request.body())


@get("/work/for-node/{node_id:str}", sync_to_thread=False, responses=_errors(503))
def get_work_for_node(api: NamedDependency[Api], node_id: FromPath[str]) -> nodework.ForNodeDoc:
    """The attempts assigned to or running on one node."""
    return api.for_node(node_id[:128])


@get(["/election/status", "/lease/status"], sync_to_thread=True, responses=_errors(503))
def get_leaders(api: NamedDependency[Api]) -> LeadersDoc:
    """Each role's leader (the holder of its KV lease) with its epoch and since when."""
    return api.leaders()


@get("/gossip/peers", sync_to_thread=True, responses=_errors(503))
def get_gossip_peers(api: NamedDependency[Api]) -> documents.PeersDoc:
    """The membership (heartbeats folded from the log; there is no gossip): the same as /peers."""
    return api.peers()


@get("/admin/config", responses=_errors(401, 403, 503), opt={"auth": True, "answer": RrConfig})
async def get_admin_config(api: NamedDependency[Api], request: Request[Any, Any, State]) -> Response[bytes]:
    """This node's effective configuration (admin token)."""
    # Encoded here and documented by msgspec (`opt["answer"]`): Litestar's schema generator cannot read RrConfig.
    return Response(msgspec.json.encode(api.effective_config(_auth(request))), media_type=JSON)


@post("/election/start", status_code=200, responses=AUTH_ERRORS, opt={"body": leasecontrol.ElectionStartBody, "auth": True})
async def post_election_start(api: NamedDependency[Api], request: Request[Any, Any, State]) -> leasecontrol.ElectionStartDoc:
    """Ask the role's leader to step down: its KV lease is deleted at its revision; the candidates elect again (coordinator or admin)."""
    return await api.election_start(_auth(request), await request.body())


LEASE_HELD = ResponseSpec(data_container=leasecontrol.LeaseRequestDoc, description="another node holds the lease: its holder and epoch")


@post("/lease/request", status_code=200, responses={**AUTH_ERRORS, 409: LEASE_HELD}, opt={"body": leasecontrol.LeaseRequestBody, "auth": True})
async def post_lease_request(api: NamedDependency[Api], request: Request[Any, Any, State]) -> Response[leasecontrol.LeaseRequestDoc]:
    """Whether a candidate node holds the role's lease (granted), may campaign for it (free), or another holds it (409)."""
    status, doc = await api.lease_request(_auth(request), await request.body())
    return Response(doc, status_code=status)


@post("/admin/shutdown", status_code=200, responses=AUTH_ERRORS, opt={"body": nodeadmin.ShutdownBody, "auth": True})
async def post_admin_shutdown(api: NamedDependency[Api], request: Request[Any, Any, State]) -> nodeadmin.ShutdownDoc:
    """Drain this node (admin): rr up stops its services, the worker hands running work back, and rr up exits 0."""
    return await api.shutdown(_auth(request), await request.body())


@post("/admin/reset", status_code=200, responses=AUTH_ERRORS, opt={"body": nodeadmin.ResetBody, "auth": True})
async def post_admin_reset(api: NamedDependency[Api], request: Request[Any, Any, State]) -> nodeadmin.ResetDoc:
    """Reset this node's local state (admin): fetched candidates and attempts that can never count; 409 while it holds work."""
    return await api.reset(_auth(request), await request.body())


@get("/metrics", responses={200: ResponseSpec(data_container=str, media_type=METRICS_TYPE, description="Prometheus text format")})
async def get_metrics(api: NamedDependency[Api]) -> Response[bytes]:
    """The fleet's vital signs for Prometheus (ops/grafana/ has a dashboard built on them)."""
    return Response(await api.prometheus(), media_type=METRICS_TYPE)


# ---- the dashboard's ------------------------------------------------------------------------------------


@get("/api/events", responses=_errors(400))
async def get_events(api: NamedDependency[Api], after: FromQuery[str | None] = None, limit: FromQuery[str | None] = None) -> documents.EventsDoc:
    """The live feed's newest events after ?after=SEQ (from a ring of the latest)."""
    return api.events(after=after, limit=limit)


@get("/api/elo", sync_to_thread=True, responses=_errors(503))
def get_elo(api: NamedDependency[Api]) -> documents.EloDoc:
    """Every config's ratings in log order and its promoted model."""
    return api.elo()


@get("/api/stream", include_in_schema=False)
async def get_stream(
    api: NamedDependency[Api], stopping: NamedDependency[asyncio.Event], request: Request[Any, Any, State], after: FromQuery[str | None] = None
) -> ServerSentEvent:
    """Server-sent events: an EventsDoc each time new events are folded (?after=SEQ or Last-Event-ID)."""
    since = int_param("after", request.headers.get("last-event-id") or after, 0)
    return ServerSentEvent(_feed(api, stopping, since))


async def _feed(api: Api, stopping: asyncio.Event, after: int) -> AsyncIterator[ServerSentEventMessage]:
    while not stopping.is_set():
        current = api.keeper.current
        doc = documents.events_after(current.recent, after, limit=FEED_LIMIT, last_seq=current.state.last_seq)
        if doc.events or after != doc.last_seq:
            after = doc.last_seq
            yield ServerSentEventMessage(data=msgspec.json.encode(doc).decode(), id=str(after))
        elif not await _wait_newer(api, stopping, after):
            yield ServerSentEventMessage(data=None, comment="idle")


async def _wait_newer(api: NamedDependency[Api], stopping: asyncio.Event, seq: int) -> bool:
    """Until an event past `seq` is folded (True), the service stops, or STREAM_IDLE_S pass (False)."""
    async with asyncio.TaskGroup() as tasks:
        folded = tasks.create_task(api.keeper.wait_folded(seq + 1, STREAM_IDLE_S))
        stopped = tasks.create_task(stopping.wait())
        await asyncio.wait((folded, stopped), return_when=asyncio.FIRST_COMPLETED)
        folded.cancel()
        stopped.cancel()
    return not folded.cancelled() and folded.result()


def _static_handler(path: str, content_type: str, body: bytes) -> Any:
    @get(path, include_in_schema=False, name=f"static:{path}")
    async def page() -> Response[bytes]:
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    return page


@get("/openapi.json", include_in_schema=False)
async def get_openapi(request: Request[Any, Any, State]) -> Response[bytes]:
    """The API's contract, generated from the handlers' types."""
    document: OpenApiDocument = request.app.state.openapi
    return Response(await document.get(request.app), media_type=JSON)


HANDLERS = [
    get_status, get_health, get_peers, get_work_status, post_work_add, post_work_claim, post_work_complete, post_work_fail,
    get_work_for_node, get_leaders, get_gossip_peers, get_admin_config, post_election_start, post_lease_request,
    post_admin_shutdown, post_admin_reset, get_metrics, get_events, get_elo, get_stream, get_openapi,
]


def _schema(kind: type, components: dict[str, Any]) -> dict[str, Any]:
    """msgspec's JSON Schema of `kind`, its definitions added to `components`."""
    (schema,), defs = msgspec.json.schema_components([kind], ref_template="#/components/schemas/{name}")
    components.update(defs)
    return schema


def openapi_document(app: Litestar) -> bytes:
    """The app's OpenAPI document, with the request bodies that handlers read raw (`opt["body"]`) filled in."""
    schema = app.openapi_schema.to_schema()
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            path = schema["paths"].get(re.sub(r":\w+}", "}", route.path))
            if path is None:  # not in the contract (the dashboard's files, the stream, the schema itself)
                continue
            for method in handler.http_methods:
                operation = path.get(method.lower())
                if operation is None:  # Litestar's own OPTIONS
                    continue
                if handler.opt.get("auth"):
                    operation["security"] = [{"bearer": []}]
                body_type = handler.opt.get("body")
                if body_type is not None:
                    operation["requestBody"] = {"required": True, "content": {JSON: {"schema": _schema(body_type, components)}}}
                answer_type = handler.opt.get("answer")
                if answer_type is not None:
                    operation["responses"]["200"]["content"] = {JSON: {"schema": _schema(answer_type, components)}}
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return msgspec.json.encode(schema)


class OpenApiDocument:
    """openapi_document of the app, made on the first request for it and kept.

    Not at start: it took ~0.45 s of CPU (Litestar's schema generation imports polyfactory), on the
    path of every api start and so of every `rr up`'s readiness, for a document few ever fetch.
    """

    def __init__(self) -> None:
        self._made: bytes | None = None
        self._making = asyncio.Lock()  # concurrent first requests make it once

    async def get(self, app: Litestar) -> bytes:
        """The document, made now (in a thread: CPU-bound) if this is the first request."""
        async with self._making:
            if self._made is None:
                self._made = await asyncio.to_thread(openapi_document, app)
        return self._made


def build_app(api: NamedDependency[Api], *, stopping: asyncio.Event, static: Mapping[str, tuple[str, bytes]]) -> Litestar:
    """The Litestar app serving `api`'s endpoints and the dashboard's files (path -> (content type, bytes))."""
    app = Litestar(
        route_handlers=[*HANDLERS, *(_static_handler(p, kind, body) for p, (kind, body) in static.items())],
        dependencies={"api": Provide(lambda: api, sync_to_thread=False), "stopping": Provide(lambda: stopping, sync_to_thread=False)},
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error},
        openapi_config=OpenAPIConfig(title="rr api", version=API_VERSION, path="/schema", render_plugins=[], use_handler_docstrings=True),
        request_max_body_size=api.settings.max_body_bytes,
        logging_config=None,
        debug=False,
    )
    app.state.openapi = OpenApiDocument()
    return app

