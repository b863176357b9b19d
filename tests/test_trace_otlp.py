"""One trace per work item, seen by a real OTLP/HTTP receiver: the span that appends WORK_ADDED is its root."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from eventbus import events as ev
from eventbus.history import events
from eventbus.natsserver import free_port
from tests.api_harness import _request, wait_caught_up
from tests.bus_harness import provisioned_bus
from tests.otlp_harness import (
    Receiver,
    receiver_fixture,  # noqa: F401 (the `receiver` fixture)
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


async def test_work_added_through_the_api_starts_its_own_trace_and_the_receiver_gets_it(
    nats_url: str, receiver: Receiver, tmp_path: Path, eventually
) -> None:
    async with provisioned_bus(nats_url, node_id="gpu-1") as bus:
        config = tmp_path / "rr.yaml"
        config.write_text(f"telemetry:\n  exporter: otlp\n  endpoint: {receiver.url}\n  metrics: false\n")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RR_", "OTEL_"))} | {"PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.service_main", "api", "--nats", nats_url, "--node-id", "gpu-1",
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
