"""GET /metrics scraped from a running `rr up`: every family the issue lists is there, and each moves when work runs.

Promotions and distributions move only once the pipeline promotes a model: the loop's run
(tests/test_loop.py) scrapes them on its way out.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest
from nats.js.api import ConsumerConfig
from prometheus_client.parser import text_string_to_metric_families

from eventbus.streams import EVENTS_STREAM
from services.api.tokens import TokensFile, issue
from tests.api_harness import _request
from tests.helpers import eventually
from tests.test_api_metrics import FAMILIES
from tests.up_harness import Up, rr_up

NODE = "lap-m"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
CONFIG = """
streams: {{events_max_gib: 1}}  # rr up reserves the streams on the disk: tests need little
scheduler: {{populator_enabled: false}}
pipeline: {{enabled: false}}
api: {{tokens_file: {tokens}}}
worker:
  templates:
    selfplay: "{{python}} -m tests.procs.worker_child --pids {{output_dir}}/pids --progress 5 --progress-every 0.2"
"""


async def scrape(api: str) -> Samples:
    """Every sample of `api`'s /metrics by (name, sorted labels); asserts that every family is there."""
    answer = await asyncio.to_thread(_request, api + "/metrics", "GET", None, {})
    assert answer.status == 200, answer.body[:500]
    families = list(text_string_to_metric_families(answer.body.decode()))
    assert set(FAMILIES) <= {f.name for f in families}, set(FAMILIES) - {f.name for f in families}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


async def _scrape_when(up: Up, ready) -> Samples | None:  # type: ignore[no-untyped-def]
    try:
        samples = await scrape(up.api)
    except (OSError, AssertionError):
        return None  # not serving yet
    return samples if ready(samples) else None


def _elected(samples: Samples) -> float:
    return samples.get(("rr_leadership_changes_total", (("role", "scheduler"),)), 0.0)


async def _post(up: Up, path: str, body: dict[str, object], token: str) -> int:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    answer = await asyncio.to_thread(_request, up.api + path, "POST", json.dumps(body).encode(), headers)
    return answer.status


@pytest.mark.timeout(240)
async def test_every_family_is_scraped_from_rr_up_and_moves_when_work_runs(tmp_path: Path) -> None:
    admin, entry = issue("ops", "admin")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_bytes(msgspec.yaml.encode(TokensFile(tokens=[entry])))
    config = tmp_path / "rr.yaml"
    config.write_text(CONFIG.format(tokens=tokens))
    completed = ("rr_work_items", (("status", "completed"), ("work_type", "selfplay")))
    add_to_assign = ("rr_work_add_to_assign_seconds_count", ())
    jobs = ("rr_job_duration_seconds_count", (("outcome", "completed"), ("work_type", "selfplay")))
    async with rr_up(tmp_path / "data", config, NODE) as up:
        before = await eventually(lambda: _scrape_when(up, lambda s: _elected(s) >= 1 and s[("rr_nodes", (("status", "alive"),))] >= 1),
                                  timeout=90, interval=0.5, message="the api serves metrics with a leader and a live node")
        # A durable consumer that takes one event and never acks it: lag and a redelivery.
        probe = await up.bus.js.pull_subscribe("rr.evt.>", durable="metrics-probe", stream=EVENTS_STREAM,
                                               config=ConsumerConfig(ack_wait=1.0, max_deliver=10))
        for _ in range(2):
            await probe.fetch(1, timeout=5)  # the second fetch, after ack_wait, is a redelivery
            await asyncio.sleep(1.2)  # ack_wait is 1 s: the server's redelivery clock, no event to wait on
        # A poison event: a durable consumer (the worker's) parks it in the dead letters.
        await up.bus.js.publish(f"rr.evt.work.w-poison.WORK_ASSIGNED.{NODE}", b"{not an event")
        for _ in range(2):
            assert await _post(up, "/work/add", {"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": 1}, admin) == 200
        assert await _post(up, "/election/start", {"reason": "metrics test"}, admin) == 200

        def moved(s: Samples) -> bool:
            return (s.get(completed, 0) == 2 and s.get(("rr_dead_letters", ()), 0) >= 1
                    and _elected(s) > _elected(before) and s.get(jobs, 0) == 2)

        after = await eventually(lambda: _scrape_when(up, moved), timeout=120, interval=0.5, message="the metrics moved")
    assert after[add_to_assign] == before.get(add_to_assign, 0) + 2
    assert after[("rr_job_duration_seconds_sum", (("outcome", "completed"), ("work_type", "selfplay")))] > 0
    assert after[("rr_consumer_pending", (("consumer", "metrics-probe"),))] > 0
    assert after[("rr_consumer_redelivered", (("consumer", "metrics-probe"),))] >= 1
    assert after[("rr_consumer_ack_pending", (("consumer", "metrics-probe"),))] >= 1
    assert after[("rr_dead_letters", ())] == before[("rr_dead_letters", ())] + 1
    assert after[("rr_log_last_seq", ())] > before[("rr_log_last_seq", ())]
    assert after[("rr_events_total", (("type", "WORK_COMPLETED"),))] == 2
    assert after[("rr_event_loop_lag_max_seconds", ())] > 0  # measured: the api's loop has run all along
    assert after[("rr_nodes", (("status", "alive"),))] == 1
