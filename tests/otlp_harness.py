"""A real OTLP/HTTP trace receiver for tests: it decodes the protobuf spans the services export."""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from eventbus.natsserver import free_port


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: decodes every protobuf export into its spans."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.services: dict[bytes, str] = {}  # span id -> the service.name of the resource that sent it
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    for r in request.resource_spans:
                        service = next((a.value.string_value for a in r.resource.attributes if a.key == "service.name"), "")
                        for scope in r.scope_spans:
                            receiver.spans += scope.spans
                            receiver.services.update((s.span_id, service) for s in scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def trace(self, trace_id: str) -> list[Span]:
        """The spans received of one trace (hex id)."""
        return [s for s in self.spans if s.trace_id.hex() == trace_id]


@contextlib.contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A receiver serving on its own thread until the block ends."""
    running = Receiver()
    thread = threading.Thread(target=running.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.server.shutdown()
        running.server.server_close()


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    """A running receiver, stopped after the test."""
    with running_receiver() as running:
        yield running
