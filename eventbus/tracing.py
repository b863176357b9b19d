"""Trace context across the bus: W3C `traceparent` in the event envelope and NATS headers.

Off unless telemetry installs a tracer (servicekit/telemetry): the publisher and the consumer
then test `ENABLED` once per event and do nothing else, and OpenTelemetry is not even
imported. On, a published event carries the current span's context (`event.trace`, copied
into the `traceparent` header by the publisher), and a consumer runs each handler inside a
span whose parent is that context, so whatever the handler publishes continues the same
trace in the next process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"

# Read on every publish and every delivery; a module global so the check is one lookup.
ENABLED = False
_tracer: Tracer | None = None
_propagator: TraceContextTextMapPropagator | None = None  # made on first use: OTel is imported only when on


def enable(tracer: Tracer) -> None:
    """Start propagating trace context and tracing handlers with `tracer` (telemetry calls this)."""
    global ENABLED, _tracer
    _tracer = tracer
    ENABLED = True


def _w3c() -> TraceContextTextMapPropagator:
    global _propagator
    if _propagator is None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        _propagator = TraceContextTextMapPropagator()
    return _propagator


def disable(tracer: Tracer | None = None) -> None:
    """Back to the default: no context propagated, no spans made; with `tracer`, only if it is the one in use."""
    global ENABLED, _tracer
    if tracer is not None and tracer is not _tracer:
        return
    ENABLED = False
    _tracer = None


def current_traceparent() -> str | None:
    """The W3C traceparent of the span active here, or None when there is none."""
    carrier: dict[str, str] = {}
    _w3c().inject(carrier)
    return carrier.get(TRACEPARENT)


def context_from(traceparent: str | None) -> Context | None:
    """The remote span context a traceparent names; None when absent or malformed."""
    if not traceparent:
        return None
    from opentelemetry.trace import get_current_span

    context = _w3c().extract({TRACEPARENT: traceparent})
    return context if get_current_span(context).get_span_context().is_valid else None


def continued(traceparent: str | None, name: str) -> Any:
    """A span named `name` continuing `traceparent`, for work on an event done outside its handler; a no-op when off.

    Use: `with continued(added.trace, "assign"): await publisher.publish(assigned)`.
    """
    if _tracer is None:
        return _NoSpan()
    return _tracer.start_as_current_span(name, context=context_from(traceparent))


def root(name: str, attributes: Mapping[str, str] | None = None) -> Any:
    """A span that starts a new trace, whatever span is active: where a work item is born (WORK_ADDED).

    Every later event of the item carries its context (WorkItem.trace), so one trace covers the
    item from its addition to what it produced, wherever the addition came from. A no-op when off.
    """
    if _tracer is None:
        return _NoSpan()
    from opentelemetry.context import Context

    return _tracer.start_as_current_span(name, context=Context(), attributes=dict(attributes or {}))


async def handle_in_span(
    handler: Callable[[Any, Any], Awaitable[None]],
    event: Any,
    where: Any,
    headers: Mapping[str, str] | None,
    consumer: str,
) -> None:
    """Run one handler inside a consumer span, the child of the trace the message carries."""
    tracer = _tracer
    if tracer is None:  # disabled between the caller's check and here
        await handler(event, where)
        return
    from opentelemetry.trace import SpanKind

    # The header is the transport's copy; the envelope's survives a republish without headers.
    parent = context_from((headers or {}).get(TRACEPARENT) or event.trace)
    with tracer.start_as_current_span(
        f"process {event.type_name()}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": where.subject,
            "messaging.consumer.group.name": consumer,
            "messaging.message.id": event.id,
            "rr.event.type": event.type_name(),
            "rr.event.source": event.source,
            "rr.stream_seq": where.stream_seq,
            "rr.deliveries": where.num_delivered,
        },
    ):
        await handler(event, where)


class _NoSpan:
    """Stands in for a span context manager while tracing is off."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
