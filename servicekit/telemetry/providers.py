"""The OpenTelemetry providers a service runs with, from the `telemetry:` settings.

With the default exporter "none" nothing is made and the SDK is not even imported. The
providers are kept here, not installed as OTel's process-wide globals: rr's own spans and
instruments use them directly, and tests may run several services in one process.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from config.sections.telemetry import TelemetrySettings
from eventbus import tracing

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from servicekit.telemetry.exporters import LineSink

INSTRUMENTATION = "rr"


class Telemetry:
    """The providers one service runs with; without an exporter there are none and nothing is traced."""

    def __init__(self, settings: TelemetrySettings, tracer_provider: TracerProvider | None = None,
                 meter_provider: MeterProvider | None = None, sink: LineSink | None = None) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self._sink = sink
        self._tracer: Tracer | None = None

    @property
    def exporter(self) -> str:
        """The exporter in use: none, console or otlp."""
        return self.settings.exporter

    def meter(self) -> Meter | None:
        """rr's meter, or None when metrics are off."""
        return self.meter_provider.get_meter(INSTRUMENTATION) if self.meter_provider else None

    def activate(self) -> None:
        """Start propagating trace context and tracing handlers (a no-op without traces)."""
        if self.tracer_provider is not None:
            self._tracer = self.tracer_provider.get_tracer(INSTRUMENTATION)
            tracing.enable(self._tracer)

    async def shutdown(self) -> None:
        """Stop tracing, export what is buffered and close the exporters (in a thread: exports block)."""
        if self._tracer is not None:
            tracing.disable(self._tracer)
        if self.tracer_provider is not None or self.meter_provider is not None:
            await asyncio.to_thread(self._shutdown_blocking)

    def _shutdown_blocking(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown(timeout_millis=5_000)
        if self._sink is not None:
            self._sink.close()


def start_telemetry(settings: TelemetrySettings, *, service: str, node: str, version: str) -> Telemetry:
    """Providers for one service from its settings; raises InvalidConfig naming the key when they cannot be made."""
    if settings.exporter == "none" or not (settings.traces or settings.metrics):
        return Telemetry(settings)
    from servicekit.telemetry.exporters import make_providers  # the SDK, only when something is exported

    tracer_provider, meter_provider, sink = make_providers(settings, service=service, node=node, version=version)
    return Telemetry(settings, tracer_provider, meter_provider, sink)
