"""Two processes of one trace, for tests/test_tracing.py.

  python -m tests.procs.traced_peer publish NATS_URL SPANS_FILE WORK_ID
      inside a span "client-request", publishes WORK_ADDED, then exports its spans and exits.
  python -m tests.procs.traced_peer relay NATS_URL CONFIG_FILE
      runs the "relay" service through run_service (telemetry from the config): it consumes
      WORK_ADDED and, inside the handler, publishes WORK_ASSIGNED; runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys

from config.sections.telemetry import TelemetrySettings
from eventbus.connection import connect
from eventbus.consumer import ConsumerSpec, Delivery, EventConsumer
from eventbus.events import WorkAdded, WorkAssigned, utcnow
from eventbus.publisher import Publisher
from eventbus.subjects import type_filter
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext, ServiceEntry, run_service
from servicekit.telemetry.providers import start_telemetry

RELAY = ServiceEntry(name="relay", target="tests.procs.traced_peer:relay_main", description="WORK_ADDED -> WORK_ASSIGNED")


async def publish(url: str, spans_file: str, work_id: str) -> None:
    """Publish one WORK_ADDED inside a root span, with traces exported to `spans_file`."""
    settings = TelemetrySettings(exporter="console", console_path=spans_file, metrics=False)
    telemetry = start_telemetry(settings, service="client", node="node-a", version="0.0.0")
    telemetry.activate()
    assert telemetry.tracer_provider is not None
    bus = await connect(url, node_id="node-a")
    try:
        with telemetry.tracer_provider.get_tracer("tests").start_as_current_span("client-request"):
            added = WorkAdded(work_id=work_id, work_type="selfplay", board_type="hex8", num_players=2)
            await Publisher(bus).publish(added)
    finally:
        await bus.close()
        await telemetry.shutdown()


async def relay_main(ctx: ServiceContext) -> None:
    """Assign every added work item to this node, from inside the handler of its WORK_ADDED."""

    async def on_added(event: WorkAdded, _where: Delivery) -> None:
        deadline = utcnow() + dt.timedelta(minutes=5)
        await ctx.publisher.publish(WorkAssigned(work_id=event.work_id, node=ctx.node_id, attempt=1, deadline=deadline))

    spec = ConsumerSpec(durable="relay", filter_subjects=(type_filter(WorkAdded.type_name()),), pull_expires_s=0.5)
    consumer = ctx.observed.consumer(EventConsumer(ctx.bus, spec, {WorkAdded: on_added}))
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(consumer.run())
        await ctx.stopping.wait()
        await consumer.stop()


def main() -> None:
    """Dispatch on the first argument."""
    mode, url, *rest = sys.argv[1:]
    if mode == "publish":
        asyncio.run(publish(url, rest[0], rest[1]))
    else:
        asyncio.run(run_service(RELAY, CommonOptions(nats_url=url, node_id="node-b", config_path=rest[0])))


if __name__ == "__main__":
    main()
