"""The HTTP shell: the stdlib's threading server in its own thread, turning requests into `Api.handle` calls.

The stdlib parses HTTP; this module only bounds what it reads (body size, idle keep-alive
connections) and writes the Response back. Handler threads never touch the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from eventbus.errors import InvalidConfig
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

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def _read_body(self) -> tuple[Response | None, bytes]:
        if self.headers.get("Transfer-Encoding"):
            return error(411, "send the body with a Content-Length (chunked bodies are not accepted)", close=True), b""
        text = self.headers.get("Content-Length")
        if text is None:
            return None, b""
        if not text.strip().isdigit():
            return error(400, f"Content-Length: not a number: {text!r}", close=True), b""
        length = int(text)
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
    """A threading HTTP server bound to one Api; handler threads are daemons so a stop never waits on a client."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], api: Api, max_body_bytes: int) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        self.max_body_bytes = max_body_bytes
        super().__init__(address, _Handler)


def open_server(host: str, port: int, api: Api, max_body_bytes: int) -> ApiServer:
    """A bound, listening server; raises InvalidConfig when the address cannot be used."""
    try:
        return ApiServer((host, port), api, max_body_bytes)
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
