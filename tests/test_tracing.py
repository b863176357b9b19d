"""Trace context across the bus: one trace from a publisher, through a consumer's handler, into what it publishes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eventbus import tracing
from eventbus.consumer import Delivery, EventConsumer
from eventbus.events import Event, HostOnline, WorkAdded, WorkAssigned, decode, utcnow
from eventbus.history import Record, replay
from eventbus.publisher import Publisher
from eventbus.subjects import type_filter
from tests.bus_harness import provisioned_bus, quick_spec, running

ROOT = Path(__file__).resolve().parents[1]


def ids(traceparent: str) -> tuple[str, str]:
    """(trace id, span id) of a W3C traceparent."""
    version, trace_id, span_id, _flags = traceparent.split("-")
    assert version == "00"
    return trace_id, span_id


def hex_id(value: str) -> str:
    """An id as the console exporter writes it ('0x…'), bare."""
    return value.removeprefix("0x")


class Traced:
    """Tracing switched on with a tracer whose finished spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def finished(self, name: str) -> Any:
        """The finished span called `name`."""
        return next(s for s in self.exporter.get_finished_spans() if s.name == name)


@pytest.fixture
def traced() -> Iterator[Traced]:
    """Tracing on for one test."""
    on = Traced()
    tracing.enable(on.tracer)
    try:
        yield on
    finally:
        tracing.disable()
        on.provider.shutdown()


def test_tracing_is_off_by_default_and_no_provider_is_installed() -> None:
    assert tracing.ENABLED is False
    # rr never installs OTel's global provider: the API's proxy is still in place.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_malformed_traceparent_is_ignored() -> None:
    assert tracing.context_from(None) is None
    assert tracing.context_from("not-a-traceparent") is None
    assert tracing.context_from("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None  # all-zero trace id
    assert tracing.context_from("00-" + "a" * 32 + "-" + "b" * 16 + "-01") is not None


async def test_off_publish_carries_no_trace_and_handlers_run_without_a_span(nats_url: str, eventually: Any) -> None:
    async with provisioned_bus(nats_url) as bus:
        published = await Publisher(bus).publish(HostOnline(node="n1", reason="test"))
        assert published.event.trace is None
        seen: list[bool] = []

        async def handler(_event: Any, _where: Delivery) -> None:
            seen.append(trace.get_current_span().get_span_context().is_valid)

        consumer = EventConsumer(bus, quick_spec("off"), {HostOnline: handler})
        async with running(consumer):
            await eventually(lambda: seen)
        assert seen == [False]


async def test_handler_span_continues_the_publishers_trace(nats_url: str, traced: Traced, eventually: Any) -> None:
    async with provisioned_bus(nats_url) as bus:
        publisher = Publisher(bus)
        with traced.tracer.start_as_current_span("request") as root:
            added = (await publisher.publish(WorkAdded(work_id="w1", work_type="selfplay", board_type="b", num_players=2))).event
        follow_ups: list[WorkAssigned] = []

        async def on_added(event: WorkAdded, _where: Delivery) -> None:
            published = await publisher.publish(WorkAssigned(work_id=event.work_id, node="n1", attempt=1, deadline=event.ts or utcnow()))
            follow_ups.append(published.event)  # type: ignore[arg-type]

        consumer = EventConsumer(bus, quick_spec("traced", filter_subjects=(type_filter("WORK_ADDED"),)), {WorkAdded: on_added})
        async with running(consumer):
            await eventually(lambda: follow_ups)

    root_ctx = root.get_span_context()
    assert ids(added.trace or "") == (f"{root_ctx.trace_id:032x}", f"{root_ctx.span_id:016x}")
    handler_span = traced.finished("process WORK_ADDED")
    assert handler_span.context.trace_id == root_ctx.trace_id
    assert handler_span.parent is not None and handler_span.parent.span_id == root_ctx.span_id
    assert handler_span.attributes["messaging.consumer.group.name"] == "traced"
    assert ids(follow_ups[0].trace or "") == (f"{root_ctx.trace_id:032x}", f"{handler_span.context.span_id:016x}")


async def test_a_failing_handler_marks_its_span_as_an_error(nats_url: str, traced: Traced, eventually: Any) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish(HostOnline(node="n1", reason="test"))

        async def broken(_event: Any, _where: Delivery) -> None:
            raise RuntimeError("handler bug")

        consumer = EventConsumer(bus, quick_spec("broken", max_attempts=1), {HostOnline: broken})
        async with running(consumer):
            await eventually(lambda: consumer.statistics().parked)
    span = traced.finished("process HOST_ONLINE")
    assert span.status.status_code == trace.StatusCode.ERROR
    assert any(e.name == "exception" for e in span.events)


async def test_one_trace_crosses_two_processes(nats_url: str, tmp_path: Path, eventually: Any) -> None:
    """A publishes inside a span; B (a service run by run_service) handles it and publishes a follow-up."""
    spans_a, spans_b, config = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "rr.yaml"
    config.write_text(f"telemetry:\n  exporter: console\n  console_path: {spans_b}\n  metrics: false\n")
    async with provisioned_bus(nats_url, node_id="reader") as bus:
        relay = await _spawn("relay", nats_url, str(config))
        try:
            publisher = await _spawn("publish", nats_url, str(spans_a), "w-42")
            assert await asyncio.wait_for(publisher.wait(), 30) == 0
            assigned = await eventually(lambda: _logged(bus, WorkAssigned), timeout=30, message="the relay's WORK_ASSIGNED")
        finally:
            relay.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(relay.wait(), 30) == 0

    root = _span(spans_a, "client-request")
    handled = _span(spans_b, "process WORK_ADDED")
    trace_id = hex_id(root["context"]["trace_id"])
    assert hex_id(handled["context"]["trace_id"]) == trace_id
    assert hex_id(handled["parent_id"]) == hex_id(root["context"]["span_id"])
    assert handled["resource"]["attributes"]["service.name"] == "rr-relay"
    assert ids(assigned[0].trace or "") == (trace_id, hex_id(handled["context"]["span_id"]))


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.procs.traced_peer", *args, cwd=ROOT, env=env)


async def _logged(bus: Any, kind: type[Event]) -> list[Any]:
    records: list[Record] = []
    await replay(bus, records.append, subject=type_filter(kind.type_name()))
    return [decode(r.data) for r in records]


def _span(path: Path, name: str) -> dict[str, Any]:
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return next(s for s in found if s.get("name") == name)



async def test_a_work_items_reports_from_the_worker_join_the_trace_of_its_work_added(
        nats_url: str, tmp_path: Path, traced: Traced, eventually: Any) -> None:
    from config.settings import RrConfig
    from eventbus.events import WorkCompleted, WorkStarted
    from tests.procs.worker_harness import Scheduler, watching, worker_running, worker_settings

    config = RrConfig(worker=worker_settings(tmp_path, templates={"chore": "true"}))
    async with provisioned_bus(nats_url, node_id="sched") as bus, watching(bus) as log:
        sched = Scheduler(bus)
        async with worker_running(nats_url, "n1", config):
            with traced.tracer.start_as_current_span("operator adds"):
                added = await sched.add("w-t", "chore")
            await sched.assign("w-t", "n1")
            [done] = await eventually(lambda: log.of(WorkCompleted, work_id="w-t"), timeout=20, message="the job ends")
            [started] = log.of(WorkStarted, work_id="w-t")
    assert added.trace is not None
    trace_id, _ = ids(added.trace)
    assert started.trace is not None and done.trace is not None
    assert ids(started.trace)[0] == trace_id and ids(done.trace)[0] == trace_id
    job = traced.finished("job chore")
    assert format(job.context.trace_id, "032x") == trace_id
