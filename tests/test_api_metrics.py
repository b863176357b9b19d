"""GET /metrics: every vital-sign family in the Prometheus text format, moving as the fleet's events arrive."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.sections.api import PORT_ENV
from eventbus import events as ev
from eventbus.streams import EVENTS_STREAM
from services.api.fleetmetrics import FleetObserver, Sample
from tests.api_harness import RunningApi, fleet_log, running_api, wait_caught_up

ROOT = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
FAMILIES = (
    "rr_nodes", "rr_work_items", "rr_work_add_to_assign_seconds", "rr_job_duration_seconds", "rr_consumer_pending",
    "rr_consumer_redelivered", "rr_dead_letters", "rr_model_promotions", "rr_model_distributions", "rr_leadership_changes",
    "rr_event_loop_lag_seconds", "rr_events",
)


@pytest.fixture(autouse=True)
def _no_port_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_ENV, raising=False)


async def _scrape(api: RunningApi) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, labels); asserts that every family is there."""
    answer = await api.get("/metrics")
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = list(text_string_to_metric_families(answer.body.decode()))
    assert set(FAMILIES) <= {f.name for f in families}, set(FAMILIES) - {f.name for f in families}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def _at(minutes: float, event: ev.Event) -> ev.Event:
    """The event as stamped at T0 + minutes (a stamped event keeps its time when published)."""
    when = T0 + dt.timedelta(minutes=minutes)
    return msgspec.structs.replace(event, id=f"gpu-1:{event.type_name()}-{minutes}", source="gpu-1", ts=when)


async def test_every_family_is_scraped_and_moves_with_the_events(nats_url: str, eventually) -> None:
    async with running_api(nats_url) as api:
        published = await api.publish(*fleet_log())
        await wait_caught_up(api.base, published[-1].seq)
        # A durable consumer that reads nothing: its lag is the whole log.
        await api.bus.js.add_consumer(EVENTS_STREAM, durable_name="metrics-probe", ack_policy="explicit")
        before = await _scrape(api)
        assert before[("rr_consumer_pending", (("consumer", "metrics-probe"),))] == published[-1].seq
        assert before[("rr_nodes", (("status", "alive"),))] == 3 and before[("rr_nodes", (("status", "offline"),))] == 1
        assert before[("rr_work_items", (("status", "pending"), ("work_type", "selfplay")))] == 1
        promoted = ("rr_model_promotions_total", (("config", "hex8_2p"),))
        assert before[promoted] == sum(1 for e in fleet_log() if isinstance(e, ev.ModelPromoted) and e.board_type == "hex8")
        assert before[("rr_leadership_changes_total", (("role", "scheduler"),))] == 1

        late = await api.publish(
            _at(0, ev.WorkAdded(work_id="w-m", work_type="training", board_type="hex8", num_players=2)),
            _at(0.5, ev.WorkAssigned(work_id="w-m", node="gpu-1", attempt=1, deadline=T0 + dt.timedelta(hours=1), epoch=4)),
            _at(1, ev.WorkStarted(work_id="w-m", node="gpu-1", attempt=1)),
            _at(3, ev.WorkAttemptFailed(work_id="w-m", node="gpu-1", attempt=1, reason="exit 1")),
            _at(4, ev.ModelPromoted(model_id="m-2", board_type="hex8", num_players=2, sha256="cd" * 32, epoch=4)),
            _at(4, ev.ModelDistributed(model_id="m-2", node="gpu-2", sha256="cd" * 32)),
            msgspec.structs.replace(_at(5, ev.LeaderElected(role="scheduler", node="gpu-2", epoch=5)), source="gpu-2"),
            _at(5, ev.HostOffline(node="gpu-3", reason="heartbeat_timeout", epoch=5)),
        )
        await wait_caught_up(api.base, late[-1].seq)
        after = await _scrape(api)
        assert after[("rr_work_add_to_assign_seconds_count", ())] == before[("rr_work_add_to_assign_seconds_count", ())] + 1
        assert after[("rr_work_add_to_assign_seconds_sum", ())] - before[("rr_work_add_to_assign_seconds_sum", ())] == pytest.approx(30.0)
        failed = ("rr_job_duration_seconds_sum", (("outcome", "failed"), ("work_type", "training")))
        assert after[failed] == pytest.approx(120.0)
        assert after[promoted] == before[promoted] + 1
        assert after[("rr_model_distributions_total", ())] == before[("rr_model_distributions_total", ())] + 1
        assert after[("rr_leadership_changes_total", (("role", "scheduler"),))] == 2
        assert after[("rr_nodes", (("status", "offline"),))] == 2
        assert after[("rr_work_items", (("status", "pending"), ("work_type", "training")))] == 1
        assert after[("rr_events_total", (("type", "HOST_OFFLINE"),))] == before[("rr_events_total", (("type", "HOST_OFFLINE"),))] + 1
        assert after[("rr_consumer_pending", (("consumer", "metrics-probe"),))] == late[-1].seq
        assert after[("rr_dead_letters", ())] == 0 and after[("rr_event_loop_lag_seconds", ())] >= 0


def test_the_observer_times_assignments_and_jobs_from_the_events_own_times() -> None:
    observer = FleetObserver()
    assert observer.observe(_at(0, ev.WorkAdded(work_id="w", work_type="selfplay", board_type="hex8", num_players=2))) == []
    assert observer.observe(_at(2, ev.WorkAssigned(work_id="w", node="n", attempt=1, deadline=T0, epoch=1))) == [Sample("add_to_assign_s", 120.0)]
    assert observer.observe(_at(3, ev.WorkAssigned(work_id="w", node="n", attempt=2, deadline=T0, epoch=1))) == []  # first only
    observer.observe(_at(4, ev.WorkStarted(work_id="w", node="n", attempt=2)))
    labels = (("work_type", "selfplay"), ("outcome", "completed"))
    assert observer.observe(_at(9, ev.WorkCompleted(work_id="w", node="n", attempt=2))) == [Sample("job_duration_s", 300.0, labels)]
    assert observer.observe(ev.WorkCompleted(work_id="v", node="n", attempt=1, duration_s=7.0)) == [
        Sample("job_duration_s", 7.0, (("work_type", "unknown"), ("outcome", "completed")))]


def test_the_grafana_dashboard_charts_every_family() -> None:
    dashboard = json.loads((ROOT / "ops" / "grafana" / "rr-fleet.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for family in FAMILIES:
        assert family in exprs, family
