"""One trace per work item in production: `rr up`'s processes and `rr work add` export to a real OTLP/HTTP receiver.

The span that appends WORK_ADDED is the root wherever the item comes from (here the CLI); the
scheduler's assignment, the worker's job and the reports continue it in their own processes. A
training item the pipeline adds is one trace through its evaluation and promotion: tests/test_loop.py
asserts that on the loop's run, which it makes once for both.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from eventbus import events as ev
from tests.helpers import eventually
from tests.otlp_harness import (
    Receiver,
    receiver_fixture,  # noqa: F401 (the `receiver` fixture)
)
from tests.up_harness import PROJECT_ROOT, rr_up

NODE = "lap-t"
# Jobs that report progress a few times and exit 0; nothing queued or trained but what the test adds.
CONFIG = """
streams: {{events_max_gib: 1}}  # rr up reserves the streams on the disk: tests need little
scheduler: {{populator_enabled: false}}
pipeline: {{enabled: false}}
telemetry: {{exporter: otlp, endpoint: "{endpoint}", metrics: false}}
worker:
  templates:
    selfplay: "{{python}} -m tests.procs.worker_child --pids {{output_dir}}/pids --progress 5 --progress-every 0.2"
"""


async def _cli_add(nats_url: str, config: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RR_", "OTEL_"))} | {"PYTHONPATH": str(PROJECT_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "work", "add", "--type", "selfplay", "--board", "hex8", "--players", "2",
        "--games", "1", "--nats", nats_url, "--node-id", "ops", "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=PROJECT_ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode().strip()


@pytest.mark.timeout(240)
async def test_an_item_added_by_the_cli_is_one_trace_from_work_added_to_its_completion(receiver: Receiver, tmp_path: Path) -> None:
    config = tmp_path / "rr.yaml"
    config.write_text(CONFIG.format(endpoint=receiver.url))
    async with rr_up(tmp_path / "data", config, NODE) as up:
        work_id = await _cli_add(up.nats_url, config)

        async def completed() -> list[ev.Event] | None:
            mine = [e for _, e in await up.log() if getattr(e, "work_id", None) == work_id]
            return mine if any(isinstance(e, ev.WorkCompleted) for e in mine) else None

        item_events = await eventually(completed, timeout=120, interval=0.2, message=f"{work_id} completed")
    # rr up has stopped: every service flushed its spans on the way out.
    added = item_events[0]
    assert isinstance(added, ev.WorkAdded) and added.trace
    trace_id, root_id = added.trace.split("-")[1:3]
    assert {e.type_name() for e in item_events} >= {"WORK_ADDED", "WORK_ASSIGNED", "WORK_STARTED", "WORK_PROGRESS", "WORK_COMPLETED"}
    assert {e.trace.split("-")[1] for e in item_events if e.trace} == {trace_id}, "every event of the item carries its trace"
    spans = receiver.trace(trace_id)
    (root,) = [s for s in spans if s.parent_span_id == b""]
    assert (root.name, root.span_id.hex(), receiver.services[root.span_id]) == ("work add", root_id, "rr-cli")
    names = {(receiver.services[s.span_id], s.name) for s in spans}
    assert {("rr-leader", "decide WORK_ASSIGNED"), ("rr-worker", "process WORK_ASSIGNED"), ("rr-worker", "job selfplay")} <= names
    assert {s.parent_span_id for s in spans} - {b""} <= {s.span_id for s in spans}, "every span's parent is in the trace"
