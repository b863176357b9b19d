"""The `telemetry:` section of the rr config: where traces and metrics go, if anywhere."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Exporter = Literal["none", "console", "otlp"]


class TelemetrySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """OpenTelemetry export; "none" (the default) installs no provider and costs nothing."""

    # console: JSON lines on stdout (or console_path); otlp: OTLP/HTTP, needs the optional
    # package opentelemetry-exporter-otlp-proto-http (`pip install rr[otlp]`).
    exporter: Exporter = "none"
    endpoint: str | None = None  # OTLP base URL, e.g. http://collector:4318; None: the exporter's default
    console_path: str | None = None  # the console exporter appends here instead of writing to stdout
    traces: bool = True
    metrics: bool = True
    metrics_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
