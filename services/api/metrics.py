"""GET /metrics: the fleet's vital signs in the Prometheus text format, from the events folded and the state.

prometheus_client rather than OpenTelemetry's Prometheus exporter (README: Metrics): the exporter is
a pre-release without multiprocessing support that is itself a prometheus_client collector, adds
scope labels to every series, and most of these figures are gauges of the folded state computed at
the scrape, which a custom collector on a registry of our own expresses directly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from eventbus.errors import InvalidEvent
from eventbus.history import Record
from eventbus.integrity import decode_on
from projections.base import type_of
from services.api.fleetmetrics import OBSERVED, FleetObserver, Gauges

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200)


class _StateCollector(Collector):
    """Gauges from the latest scrape's `Gauges` (set just before the registry is rendered)."""

    def __init__(self) -> None:
        self.latest: Gauges | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = self.latest
        if g is None:
            return
        nodes = GaugeMetricFamily("rr_nodes", "Nodes the log has seen, by liveness", labels=["status"])
        for status, count in sorted(g.nodes.items()):
            nodes.add_metric([status], count)
        queue = GaugeMetricFamily("rr_work_items", "Work items by status and type (queue depth)", labels=["status", "work_type"])
        for (status, work_type), count in sorted(g.queue.items()):
            queue.add_metric([status, work_type], count)
        pending = GaugeMetricFamily("rr_consumer_pending", "Messages a durable consumer has not been delivered yet", labels=["consumer"])
        ack = GaugeMetricFamily("rr_consumer_ack_pending", "Messages delivered to a consumer, not yet acked", labels=["consumer"])
        redelivered = GaugeMetricFamily("rr_consumer_redelivered", "Messages redelivered to a consumer now", labels=["consumer"])
        for name, lag in sorted(g.consumers.items()):
            pending.add_metric([name], lag.pending)
            ack.add_metric([name], lag.ack_pending)
            redelivered.add_metric([name], lag.redelivered)
        yield from (nodes, queue, pending, ack, redelivered)
        yield GaugeMetricFamily("rr_dead_letters", "Messages parked in the dead-letter stream", value=g.dead_letters or 0)
        yield GaugeMetricFamily("rr_event_loop_lag_seconds", "The api's event-loop lag, last measured", value=g.loop_lag_s)
        yield GaugeMetricFamily("rr_event_loop_lag_max_seconds", "The api's worst event-loop lag", value=g.loop_lag_max_s)
        yield GaugeMetricFamily("rr_log_last_seq", "The last event of the log this api has folded", value=g.last_seq)


class FleetMetrics:
    """The api's Prometheus registry: histograms and counters fed by folded events, gauges read at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._observer = FleetObserver()
        self._state = _StateCollector()
        self.registry.register(self._state)
        r = self.registry
        self._instruments = {
            "add_to_assign_s": Histogram("rr_work_add_to_assign_seconds", "From WORK_ADDED to its first WORK_ASSIGNED",
                                         buckets=LATENCY_BUCKETS, registry=r),
            "job_duration_s": Histogram("rr_job_duration_seconds", "Attempts from start to completion or failure",
                                        ["work_type", "outcome"], buckets=DURATION_BUCKETS, registry=r),
            "promotions": Counter("rr_model_promotions", "Models promoted", ["config"], registry=r),
            "distributions": Counter("rr_model_distributions", "Model copies distributed to nodes", registry=r),
            "leadership_changes": Counter("rr_leadership_changes", "Leaders elected, per role", ["role"], registry=r),
        }
        self._events = Counter("rr_events", "Events folded, by type", ["type"], registry=r)

    def on_record(self, record: Record) -> None:
        """Count one folded record and observe what it says (called by the keeper for every record)."""
        kind = type_of(record.subject)
        self._events.labels(kind or "unknown").inc()
        if kind not in OBSERVED:
            return
        try:
            event = decode_on(record.subject, record.data, record.headers)
        except InvalidEvent:
            return  # unreadable or its body disagrees with its subject: the projections record it as an anomaly
        for sample in self._observer.observe(event):
            instrument = self._instruments[sample.name]
            target = instrument.labels(*(v for _, v in sample.labels)) if sample.labels else instrument
            if isinstance(target, Histogram):
                target.observe(sample.value)
            elif isinstance(target, Counter):
                target.inc(sample.value)

    def render(self, latest: Gauges) -> bytes:
        """The text exposition with `latest` as the gauges."""
        self._state.latest = latest
        return generate_latest(self.registry)
