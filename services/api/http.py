"""The HTTP shell: the stdlib's threading server in its own thread, turning requests into `Api.handle` calls.

The stdlib parses HTTP; this module only bounds what it reads (body size, idle keep-alive
connections) and writes the Response back. Handler threads never touch the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from eventbus.errors import InvalidConfig
from services.api.params import ascii_count
from services.api.routes import Api, Response, error

log = logging.getLogger(__name__)

IDLE_CONNECTION_S = 30.0  # a keep-alive connection with no request for this long is closed
POLL_INTERVAL_S = 0.2  # how soon serve_forever notices a shutdown


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the dashboard polls every second
    timeout = IDLE_CONNECTION_S
    server: ApiServer

    def version_string(self) -> str:
        """The Server header."""
        return "rr-api"

    def _serve(self) -> None:
        problem, body = self._read_body()
        response = problem or self.server.api.handle(self.command, self.path, body, self.client_address[0])
        self._send(response)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's answer to a request it cannot parse, as our JSON error, and the connection closed."""
        self.close_connection = True
        reason = f"malformed request: {message or explain or code}"
        try:
            self._send(error(code if 400 <= code < 500 else 400, reason, close=True))
        except OSError:
            pass  # the client went away; nothing to answer

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def _read_body(self) -> tuple[Response | None, bytes]:
        if self.headers.get("Transfer-Encoding"):
            return error(411, "send the body with a Content-Length (chunked bodies are not accepted)", close=True), b""
        text = self.headers.get("Content-Length")
        if text is None:
            return None, b""
        length = ascii_count(text.strip())
        if length is None:
            return error(400, f"Content-Length: not a number: {text[:40]!r}", close=True), b""
        limit = self.server.max_body_bytes
        if length > limit:
            # Not read: the connection is closed after the answer instead.
            return error(413, f"body of {length} bytes is over the limit of {limit} bytes", close=True), b""
        return None, self.rfile.read(length)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in response.headers:
            self.send_header(name, value)
        if response.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        log.debug("%s %s", self.address_string(), format % args)


class ApiServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one Api; handler threads are daemons so a stop never waits on a client.

    At most `max_connections` are served at once (a thread each); one more is answered 503 and
    closed at once, so a flood of idle connections cannot exhaust the process.
    """

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], api: Api, max_body_bytes: int, max_connections: int = 128) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        """Serve the connection in a thread if a slot is free, else answer 503 and close it."""
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            with contextlib.suppress(OSError):
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        """The stdlib's per-connection thread, giving its slot back at the end."""
        try:
            super().process_request_thread(request, client_address)  # type: ignore[arg-type]
        finally:
            self._slots.release()

    def handle_error(self, request: object, client_address: object) -> None:
        """One log line for a connection that failed, never a traceback on stderr."""
        exc = sys.exc_info()[1]
        log.warning("api: connection from %s failed: %s: %s", client_address, type(exc).__name__, exc)


_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: 60\r\n\r\n"
         + b'{"error": "too many connections; retry", "success": false}'.ljust(60))


def open_server(host: str, port: int, api: Api, max_body_bytes: int, max_connections: int = 128) -> ApiServer:
    """A bound, listening server; raises InvalidConfig when the address cannot be used."""
    try:
        return ApiServer((host, port), api, max_body_bytes, max_connections)
    except OSError as exc:
        raise InvalidConfig(
            f"api: cannot listen on {host}:{port}: {exc.strerror or exc}; set api.port / api.host in the config "
            "or pass --api-port"
        ) from None


async def serve_until(server: ApiServer, stopping: asyncio.Event) -> None:
    """Serve in a dedicated thread until `stopping` is set (or this is cancelled), then close the socket."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S}, name="rr-api-http", daemon=True
    )
    thread.start()
    try:
        await stopping.wait()
    finally:
        await asyncio.to_thread(server.shutdown)  # returns once serve_forever has
        server.server_close()
        await asyncio.to_thread(thread.join, 5.0)
