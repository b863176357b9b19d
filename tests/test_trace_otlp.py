"""One trace per work item, seen by a real OTLP/HTTP receiver: the span that appends WORK_ADDED is its root."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from eventbus import events as ev
from eventbus.history import events
from eventbus.natsserver import free_port
from tests.api_harness import _request, wait_caught_up
from tests.bus_harness import provisioned_bus

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: decodes every protobuf export into its spans."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    receiver.spans += [s for r in request.resource_spans for scope in r.scope_spans for s in scope.spans]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A running receiver, stopped after the test."""
    running = Receiver()
    thread = threading.Thread(target=running.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


async def test_work_added_through_the_api_starts_its_own_trace_and_the_receiver_gets_it(
    nats_url: str, receiver: Receiver, tmp_path: Path, eventually
) -> None:
    async with provisioned_bus(nats_url, node_id="gpu-1") as bus:
        config = tmp_path / "rr.yaml"
        config.write_text(f"telemetry:\n  exporter: otlp\n  endpoint: {receiver.url}\n  metrics: false\n")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RR_", "OTEL_"))} | {"PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.service_cli", "api", "--nats", nats_url, "--node-id", "gpu-1",
            "--api-port", str(port), "--config", str(config), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_caught_up(base, 0)
            body = b'{"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": 100}'
            answer = await asyncio.to_thread(_request, base + "/work/add", "POST", body, {"Content-Type": "application/json"})
            assert answer.status == 200, answer.body
            work_id = answer.json()["work_id"]
            proc.send_signal(signal.SIGTERM)  # the exporter flushes on the way out
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()[-2000:]
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
        added = [e async for _, e in events(bus) if isinstance(e, ev.WorkAdded)]
    assert [a.work_id for a in added] == [work_id] and added[0].trace
    _, trace_id, span_id, _ = added[0].trace.split("-")
    roots = await eventually(lambda: [s for s in receiver.spans if s.name == "work add"], message="the receiver got the root span")
    (root,) = roots
    assert (root.trace_id.hex(), root.span_id.hex(), root.parent_span_id) == (trace_id, span_id, b"")  # a root
    attributes = {a.key: a.value.string_value for a in root.attributes}
    assert attributes["rr.work_id"] == work_id and attributes["rr.requested_by"] == "api:gpu-1"
