"""OpenTelemetry SDK providers and exporters: console (JSON lines) or OTLP/HTTP (an optional package)."""

from __future__ import annotations

import sys
import threading
from typing import IO

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from config.sections.telemetry import TelemetrySettings
from eventbus.errors import InvalidConfig

OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-http"


class LineSink:
    """A text stream the span and metric exporters share from their own threads, one whole line at a time."""

    def __init__(self, stream: IO[str], *, owned: bool) -> None:
        self._stream = stream
        self._owned = owned
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        """Write one exporter record."""
        with self._lock:
            return self._stream.write(text)

    def flush(self) -> None:
        """Flush the stream."""
        with self._lock:
            self._stream.flush()

    def close(self) -> None:
        """Close the file, if this sink opened it."""
        if self._owned:
            self._stream.close()


def make_providers(settings: TelemetrySettings, *, service: str, node: str,
                   version: str) -> tuple[TracerProvider | None, MeterProvider | None, LineSink | None]:
    """Tracer and meter providers (None where turned off) exporting as the settings say, and the sink they share."""
    span_exporter, metric_exporter, sink = _exporters(settings)
    resource = Resource.create({
        "service.name": f"rr-{service}",
        "service.namespace": "rr",
        "service.version": version,
        "service.instance.id": f"{node}:{service}",
        "host.name": node,
    })
    tracer_provider = None
    if settings.traces:
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider = None
    if settings.metrics:
        reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=settings.metrics_interval_s * 1000)
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    return tracer_provider, meter_provider, sink


def _exporters(settings: TelemetrySettings) -> tuple[SpanExporter, MetricExporter, LineSink | None]:
    if settings.exporter == "otlp":
        spans, metrics = _otlp_exporters(settings.endpoint)
        return spans, metrics, None
    sink = _console_sink(settings.console_path)
    return (
        ConsoleSpanExporter(out=sink, formatter=_span_line),  # type: ignore[arg-type]
        ConsoleMetricExporter(out=sink, formatter=_metrics_line),  # type: ignore[arg-type]
        sink,
    )


def _console_sink(path: str | None) -> LineSink:
    if path is None:
        return LineSink(sys.stdout, owned=False)
    try:
        return LineSink(open(path, "a", encoding="utf-8"), owned=True)  # noqa: SIM115 - closed at shutdown
    except OSError as exc:
        raise InvalidConfig(f"telemetry.console_path: cannot open {path}: {exc.strerror or exc}") from None


def _otlp_exporters(endpoint: str | None) -> tuple[SpanExporter, MetricExporter]:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # type: ignore[import-not-found,unused-ignore]
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise InvalidConfig(
            f"telemetry.exporter: 'otlp' needs the Python package {OTLP_PACKAGE}, which is not installed: "
            f"pip install {OTLP_PACKAGE} (or pip install 'rr[otlp]'), or set telemetry.exporter to console or none"
        ) from None
    if not endpoint:  # the exporters' own default (OTEL_EXPORTER_OTLP_ENDPOINT or localhost:4318)
        return OTLPSpanExporter(), OTLPMetricExporter()
    base = endpoint.rstrip("/")
    return OTLPSpanExporter(endpoint=f"{base}/v1/traces"), OTLPMetricExporter(endpoint=f"{base}/v1/metrics")


def _span_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def _metrics_line(data: MetricsData) -> str:
    return str(data.to_json(indent=None)) + "\n"
