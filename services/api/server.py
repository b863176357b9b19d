"""The HTTP shell: uvicorn serving the app on the service's own event loop, with our bounds and our errors.

uvicorn parses HTTP (h11); this module bounds what it keeps (connections, idle keep-alive) and
answers what it cannot parse, or a connection past the cap, as our one-line JSON and a close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import h11
import msgspec
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from eventbus.errors import InvalidConfig
from services.api.documents import ErrorDoc

log = logging.getLogger(__name__)

IDLE_CONNECTION_S = 30  # a keep-alive connection with no request for this long is closed
GRACEFUL_S = 3  # on stop, requests in flight get this long; event streams end at once
BACKLOG = 64
ASGIApp = Callable[[dict[str, Any], Callable[..., Any], Callable[..., Any]], Awaitable[None]]


def raw_answer(status: int, phrase: str, reason: str, *extra: str) -> bytes:
    """A complete HTTP/1.1 answer with our JSON error body, closing the connection."""
    body = msgspec.json.encode(ErrorDoc(error=reason, success=False))
    head = [f"HTTP/1.1 {status} {phrase}", "Content-Type: application/json", f"Content-Length: {len(body)}",
            "Connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


BUSY = raw_answer(503, "Service Unavailable", "too many connections; retry", "Retry-After: 1")


def bounded_protocol(max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol, answering past `max_connections` with 503 and bad framing with our 400."""

    class BoundedH11(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.problem = ""
            parse = self.conn.next_event

            def next_event() -> Any:
                # uvicorn answers a parse error with a fixed text; the client is owed h11's reason.
                try:
                    return parse()
                except h11.RemoteProtocolError as exc:
                    self.problem = str(exc)[:200]
                    raise

            self.conn.next_event = next_event  # type: ignore[method-assign]

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                # Refused before reading anything: a flood of idle connections cannot exhaust the process.
                transport.write(BUSY)
                transport.close()

        def send_400_response(self, msg: str) -> None:
            self.transport.write(raw_answer(400, "Bad Request", f"malformed request: {self.problem or msg}"))
            self.transport.close()

    return BoundedH11


def head_as_get(app: ASGIApp, *, endless: frozenset[str] = frozenset({"/api/stream"})) -> ASGIApp:
    """HEAD answered as GET without the body, as http.server did (`curl -I`, load-balancer checks).

    Not for `endless` paths (event streams): their GET never ends, so HEAD gets the app's 405.
    """

    async def serve(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope.get("type") != "http" or scope.get("method") != "HEAD" or scope.get("path") in endless:
            await app(scope, receive, send)
            return

        async def headers_only(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await app({**scope, "method": "GET"}, receive, headers_only)

    return serve


def open_server(host: str, port: int) -> socket.socket:
    """A bound, listening socket; raises InvalidConfig when the address cannot be used."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise InvalidConfig(
            f"api: cannot listen on {host}:{port}: {exc.strerror or exc}; set api.port / api.host in the config "
            "or pass --api-port"
        ) from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the service runtime owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: ASGIApp, *, max_connections: int) -> uvicorn.Server:
    """A uvicorn server for `app` with the API's bounds, its logging left to ours."""
    config = uvicorn.Config(
        head_as_get(app), http=bounded_protocol(max_connections), ws="none", lifespan="off", log_config=None, access_log=False,
        timeout_keep_alive=IDLE_CONNECTION_S, timeout_graceful_shutdown=GRACEFUL_S, server_header=False,
        date_header=True, headers=[("Server", "rr-api")],
    )
    return _Server(config)


async def serve_until(server: uvicorn.Server, sock: socket.socket, stopping: asyncio.Event) -> None:
    """Serve on `sock` until `stopping` is set (or this is cancelled), then close it."""
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(server.serve(sockets=[sock]))
            await stopping.wait()
            server.should_exit = True
    finally:
        sock.close()
