"""Telemetry from config: off by default, config mistakes named, metrics read from the services' statistics."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

from config.sections.telemetry import TelemetrySettings
from config.settings import load_config
from eventbus import tracing
from eventbus.consumer import EventConsumer
from eventbus.errors import InvalidConfig
from eventbus.events import HostOnline
from eventbus.publisher import Publisher
from servicekit.looplag import LoopLagMonitor
from servicekit.telemetry.exporters import OTLP_PACKAGE
from servicekit.telemetry.metrics import ServerLagSampler, install_instruments
from servicekit.telemetry.observed import Observed
from servicekit.telemetry.providers import start_telemetry
from tests.bus_harness import provisioned_bus, quick_spec, running

ROOT = Path(__file__).resolve().parents[1]


def points(data: MetricsData) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """metric name -> [(attributes, value or histogram sum)] of every data point collected."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", getattr(point, "sum", None))
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


class _NoBus:
    """Enough of a Bus for a publisher that only reports its (zero) statistics."""

    node_id = "n1"


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rr.yaml"
    path.write_text(text)
    return path


def test_default_config_installs_nothing() -> None:
    telemetry = start_telemetry(load_config(None).telemetry, service="s", node="n", version="0.0.0")
    telemetry.activate()
    assert telemetry.tracer_provider is None and telemetry.meter_provider is None and telemetry.meter() is None
    assert tracing.ENABLED is False


def test_off_by_default_does_not_even_import_opentelemetry() -> None:
    # The hot path's whole cost when off is `tracing.ENABLED`; a fresh process proves nothing else loaded.
    code = (
        "import sys, servicekit.runtime, eventbus.consumer, eventbus.publisher\n"
        "from servicekit.telemetry.providers import start_telemetry\n"
        "from config.sections.telemetry import TelemetrySettings\n"
        "start_telemetry(TelemetrySettings(), service='s', node='n', version='0.0.0').activate()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_unknown_exporter_is_named_with_its_key(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as error:
        load_config(config_file(tmp_path, "telemetry:\n  exporter: jaeger\n"))
    assert "telemetry.exporter" in str(error.value) and "rr.yaml" in str(error.value)


def test_unknown_telemetry_key_and_bad_interval_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="telemetry"):
        load_config(config_file(tmp_path, "telemetry:\n  exportr: console\n"))
    with pytest.raises(InvalidConfig, match=r"telemetry\.metrics_interval_s"):
        load_config(config_file(tmp_path, "telemetry:\n  metrics_interval_s: 0\n"))


def test_otlp_without_its_package_fails_at_start_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test extra installs the exporter; hide it (a None in sys.modules makes its import fail) to
    # see what a node without the `otlp` extra gets.
    hidden = "opentelemetry.exporter.otlp"
    for name in [hidden, *(n for n in sys.modules if n.startswith(hidden + "."))]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(InvalidConfig) as error:
        start_telemetry(TelemetrySettings(exporter="otlp"), service="s", node="n", version="0.0.0")
    assert "telemetry.exporter" in str(error.value) and OTLP_PACKAGE in str(error.value)


def test_unwritable_console_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match=r"telemetry\.console_path"):
        start_telemetry(TelemetrySettings(exporter="console", console_path=str(tmp_path / "no" / "such" / "dir.jsonl")),
                        service="s", node="n", version="0.0.0")


async def test_metrics_read_loop_lag_publisher_and_consumer_statistics(nats_url: str, eventually: Any) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    async with provisioned_bus(nats_url) as bus:
        publisher = Publisher(bus)
        loop_lag = LoopLagMonitor()
        loop_lag.record(0.3)  # one slow sample, over the 0.25 s threshold
        observed = Observed(loop_lag, publisher)
        install_instruments(provider.get_meter("tests"), observed, ServerLagSampler(bus, asyncio.get_running_loop()).sample)
        await publisher.publish_many([HostOnline(node=f"n{i}", reason="test") for i in range(3)])

        async def handle(_event: Any, _where: Any) -> None:
            return None

        consumer = observed.consumer(EventConsumer(bus, quick_spec("metrics"), {HostOnline: handle}))
        async with running(consumer):
            await eventually(lambda: consumer.statistics().handled == 3)
        observed.jobs.record(2.5)
        # Collection samples the server's lag through this loop: it must run in another thread.
        data = await asyncio.to_thread(reader.get_metrics_data)
        assert data is not None
        found = points(data)
    provider.shutdown()

    assert found["rr.loop.lag"] == [({}, 0.3)] and found["rr.loop.lag.slow"] == [({}, 1)]
    assert found["rr.events.published"] == [({}, 3)]
    assert ({"consumer": "metrics", "outcome": "handled"}, 3) in found["rr.events.consumed"]
    assert found["rr.consumer.redeliveries"] == [({"consumer": "metrics"}, 0)]
    assert found["rr.consumer.dead_letters"] == [({"consumer": "metrics"}, 0)]
    assert found["rr.consumer.pending"] == [({"consumer": "metrics"}, 0)]
    assert found["rr.job.duration"] == [({"outcome": "completed"}, 2.5)]


async def test_console_exporter_writes_metrics_as_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "telemetry.jsonl"
    settings = TelemetrySettings(exporter="console", console_path=str(out), traces=False, metrics_interval_s=3600)
    telemetry = start_telemetry(settings, service="svc", node="n1", version="1.0.0")
    meter = telemetry.meter()
    assert meter is not None and telemetry.tracer_provider is None
    loop_lag = LoopLagMonitor()
    loop_lag.record(0.01)
    install_instruments(meter, Observed(loop_lag, Publisher(_NoBus())))  # type: ignore[arg-type]  # never publishes
    await telemetry.shutdown()  # the final collection is exported at shutdown
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    [resource] = record["resource_metrics"]
    assert resource["resource"]["attributes"]["service.name"] == "rr-svc"
    names = {m["name"] for scope in resource["scope_metrics"] for m in scope["metrics"]}
    assert {"rr.loop.lag", "rr.loop.lag.max", "rr.events.published"} <= names
