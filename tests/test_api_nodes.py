"""HTTP-only nodes take and report work through the API with a worker's guarantees; the seeds' other endpoints."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from config.sections.api import PORT_ENV
from config.sections.scheduler import SchedulerSettings
from eventbus import events as ev
from eventbus.history import events
from eventbus.publisher import Publisher
from eventbus.streams import StreamSettings, provision
from projections import work
from services.api import nodework
from services.api.tokens import Principal, Refused, TokensFile, authenticate, authorize, issue, load_table
from tests.api_harness import RunningApi, fleet_log, running_api, wait_caught_up
from tests.auth_harness import auth_server, open_as, violations
from tests.scheduler_harness import (
    add_items,
    all_in,
    attempt_violations,
    online,
    read_log,
    run_scheduler,
    simulated_worker,
    stop,
)

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)


@pytest.fixture(autouse=True)
def _no_port_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_ENV, raising=False)


def _tokens(tmp_path: Path) -> tuple[str, dict[str, str]]:
    issued = {user: issue(user, role) for user, role in (("http-1", "worker"), ("gpu-2", "worker"), ("ops", "admin"))}
    path = tmp_path / "api-tokens.yaml"
    path.write_bytes(msgspec.yaml.encode(TokensFile(tokens=[entry for _, entry in issued.values()])))
    return str(path), {user: token for user, (token, _) in issued.items()}


async def _post(api: RunningApi, path: str, body: dict[str, Any] | None, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    answer = await api.send("POST", path, json.dumps(body).encode() if body is not None else b"", headers)
    return answer.status, answer.json()


async def _logged(api: RunningApi, kind: type[ev.Event]) -> list[Any]:
    return [e async for _, e in events(api.bus) if isinstance(e, kind)]


async def test_an_http_only_node_claims_completes_and_fails_work_exactly_once(nats_url: str, tmp_path: Path) -> None:
    tokens_file, token = _tokens(tmp_path)
    async with running_api(nats_url, tokens_file=tokens_file) as api:
        published = await api.publish(
            ev.HostOnline(node="http-1", roles=["selfplay"], version="legacy"),
            *(ev.WorkAdded(work_id=w, work_type="selfplay", board_type="hex8", num_players=2) for w in ("w-a", "w-b")),
            *(ev.WorkAssigned(work_id=w, node="http-1", attempt=1, deadline=DEADLINE, epoch=4) for w in ("w-a", "w-b")),
        )
        await wait_caught_up(api.base, published[-1].seq)

        assert (await _post(api, "/work/claim", {}, None))[0] == 401
        status, doc = await _post(api, "/work/claim", {"node_id": "http-1"}, token["gpu-2"])
        assert status == 403 and "may not act for node http-1" in doc["error"]
        status, doc = await _post(api, "/work/claim", {"node": "http-1"}, token["http-1"])
        assert status == 400 and doc["error"].startswith("node: unknown field (known: node_id)"), doc
        status, doc = await _post(api, "/work/fail", {"work_id": "w-a", "attempt": 1}, token["http-1"])
        assert status == 400 and doc["error"].startswith("reason: missing"), doc

        status, claimed = await _post(api, "/work/claim", None, token["http-1"])
        assert status == 200, claimed
        assert (claimed["work"]["work_id"], claimed["work"]["status"], claimed["work"]["attempt"]) == ("w-a", "running", 1)
        started = await _logged(api, ev.WorkStarted)
        assert [(e.work_id, e.node, e.source) for e in started] == [("w-a", "http-1", "gpu-1")]  # relayed by the api's node

        mine = (await api.get("/work/for-node/http-1")).json()
        assert [(i["work_id"], i["status"]) for i in mine["items"]] == [("w-a", "running"), ("w-b", "assigned")]

        status, done = await _post(api, "/work/complete", {"work_id": "w-a", "attempt": 1, "duration_s": 12.5}, token["http-1"])
        assert (status, done["status"]) == (200, "completed"), done
        again, refused = await _post(api, "/work/complete", {"work_id": "w-a", "attempt": 1}, token["http-1"])
        assert again == 409 and "completed" in refused["error"]
        stale, why = await _post(api, "/work/complete", {"work_id": "w-b", "attempt": 2}, token["http-1"])
        assert stale == 409 and why["error"].startswith("attempt: "), why
        assert (await _post(api, "/work/complete", {"work_id": "w-zz", "attempt": 1}, token["http-1"]))[0] == 404
        bad, named = await _post(api, "/work/complete", {"work_id": "w-b", "attempt": 0}, token["http-1"])
        assert bad == 400 and named["error"].startswith("attempt: "), named
        assert [(e.work_id, e.source) for e in await _logged(api, ev.WorkCompleted)] == [("w-a", "gpu-1")]  # once

        status, claimed = await _post(api, "/work/claim", {}, token["http-1"])
        assert claimed["work"]["work_id"] == "w-b"
        status, failed = await _post(api, "/work/fail", {"work_id": "w-b", "attempt": 1, "reason": "out of disk", "exit_code": 3},
                                     token["http-1"])
        assert (status, failed["status"]) == (200, "pending"), failed
        assert [(e.work_id, e.reason, e.source) for e in await _logged(api, ev.WorkAttemptFailed)] == [("w-b", "out of disk", "gpu-1")]
        assert (await _post(api, "/work/claim", {}, token["http-1"]))[1]["work"] is None  # nothing assigned any more

        # Adding work needs a token once tokens are configured, and a role that may add work.
        seeds = {"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": 100}
        assert (await _post(api, "/work/add", seeds, None))[0] == 401
        assert (await _post(api, "/work/add", seeds, token["http-1"]))[0] == 403
        assert (await _post(api, "/work/add", seeds, token["ops"]))[0] == 200


async def test_election_lease_gossip_and_admin_config_answer_from_the_log(nats_url: str, tmp_path: Path) -> None:
    tokens_file, token = _tokens(tmp_path)
    async with running_api(nats_url, tokens_file=tokens_file) as api:
        published = await api.publish(*fleet_log())
        await wait_caught_up(api.base, published[-1].seq)
        for path in ("/election/status", "/lease/status"):
            doc = (await api.get(path)).json()
            assert doc["leader_id"] == "gpu-1", path
            assert {r: (lead["node"], lead["epoch"]) for r, lead in doc["leaders"].items()} == {"promoter": ("gpu-2", 2), "scheduler": ("gpu-1", 4)}
        gossip = (await api.get("/gossip/peers")).json()
        assert (gossip["alive_peers"], gossip["total"]) == (3, 4)
        assert (await api.get("/admin/config")).status == 401
        worker = await api.send("GET", "/admin/config", None, {"Authorization": f"Bearer {token['http-1']}"})
        assert worker.status == 403
        admin = await api.send("GET", "/admin/config", None, {"Authorization": f"Bearer {token['ops']}"})
        assert admin.status == 200 and admin.json()["api"]["tokens_file"] == tokens_file


def test_tokens_name_who_and_refuse_clearly() -> None:
    token, entry = issue("http-1", "worker")
    table = {entry.sha256: Principal(user="http-1", role="worker")}
    assert authenticate(f"Bearer {token}", table) == Principal(user="http-1", role="worker")
    for header, reason in ((None, "expected 'Bearer <token>'"), ("Basic abc", "expected 'Bearer"), ("Bearer nope", "unknown token")):
        with pytest.raises(Refused, match=reason) as refused:
            authenticate(header, table)
        assert refused.value.status == 401
    with pytest.raises(Refused, match="no API tokens are configured"):
        authenticate(f"Bearer {token}", None)
    with pytest.raises(Refused, match="may not publish WORK_ADDED") as refused:
        authorize(Principal(user="http-1", role="worker"), node=None, type_name="WORK_ADDED")
    assert refused.value.status == 403
    authorize(Principal(user="http-1", role="worker"), node="http-1", type_name="WORK_COMPLETED")


def test_a_report_is_judged_by_the_work_projections_rules() -> None:
    history = list(enumerate([
        ev.WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2),
        ev.WorkAssigned(work_id="w-1", node="n-1", attempt=1, deadline=DEADLINE, epoch=1),
        ev.WorkAttemptFailed(work_id="w-1", node="n-1", attempt=1, reason="timeout"),
        ev.WorkAssigned(work_id="w-1", node="n-2", attempt=2, deadline=DEADLINE, epoch=1),
    ], 1))
    item = nodework.fold_item(history)
    assert item is not None and (item.status.value, item.attempt, item.node) == ("assigned", 2, "n-2")
    late = ev.WorkCompleted(work_id="w-1", node="n-1", attempt=1)
    assert nodework.problem(item, late, "w-1") is None  # its work is done: the late completion still counts
    assert nodework.problem(item, ev.WorkStarted(work_id="w-1", node="n-1", attempt=1), "w-1").startswith("attempt: ")
    assert nodework.problem(None, late, "w-9") == "work_id: no work item w-9"
    done = nodework.fold_item([*history, (5, ev.WorkCompleted(work_id="w-1", node="n-2", attempt=2))])
    assert "is completed" in nodework.problem(done, ev.WorkCompleted(work_id="w-1", node="n-2", attempt=2), "w-1")


def test_rr_auth_token_prints_a_token_once_and_keeps_only_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RR_")} | {"PYTHONPATH": str(ROOT)}

    def rr_token(user: str, role: str) -> str:
        done = subprocess.run([sys.executable, "-m", "cli.main", "auth", "token", user, "--role", role, "--file", str(path)],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True)
        return done.stdout.strip()

    first, second = rr_token("http-1", "worker"), rr_token("http-1", "worker")
    assert first != second and first not in path.read_text() and oct(path.stat().st_mode)[-3:] == "600"
    known = load_table(path)
    assert authenticate(f"Bearer {second}", known).user == "http-1"
    with pytest.raises(Refused, match="unknown token"):
        authenticate(f"Bearer {first}", known)  # issuing again replaced the old token


async def test_an_http_node_and_a_worker_share_a_real_leaders_queue_with_each_item_completed_once(
    nats_url: str, tmp_path: Path, eventually
) -> None:
    tokens_file, token = _tokens(tmp_path)
    async with running_api(nats_url, tokens_file=tokens_file) as api:
        pub = Publisher(api.bus)
        await online(pub, "n1", "http-1")
        ids = await add_items(pub, 12)
        worker = asyncio.create_task(simulated_worker(api.bus, "n1", lambda job: "complete", work_s=0.05))
        scheduler = await run_scheduler(api.bus, SchedulerSettings(default_max_parallel_jobs=1))
        done_over_http: list[str] = []

        async def legacy_script() -> None:
            # What a seeds-era script does: claim, do the job, report, and report again when unsure.
            while True:
                status, claimed = await _post(api, "/work/claim", {}, token["http-1"])
                assert status in (200, 503), claimed  # 503 (Retry-After) while the api catches up at start
                job = claimed.get("work")
                if job is None:
                    await asyncio.sleep(0.05)  # the script's poll interval: it has no event to wait on
                    continue
                report = {"work_id": job["work_id"], "attempt": job["attempt"], "duration_s": 0.1}
                assert (await _post(api, "/work/complete", report, token["http-1"]))[0] == 200
                done_over_http.append(job["work_id"])  # before the retry: the test may stop the script during it
                again, _ = await _post(api, "/work/complete", report, token["http-1"])
                assert again == 409  # a retried report is refused, not counted twice

        script = asyncio.create_task(legacy_script())
        try:
            await eventually(lambda: all_in(api.bus, work.WorkStatus.COMPLETED, ids), timeout=60, message="every item completed")
        finally:
            await stop(script, worker, scheduler)
        log = await read_log(api.bus)
    assert attempt_violations(log) == []
    by_node = Counter(e.node for e in log if isinstance(e, ev.WorkCompleted))
    assert sum(by_node.values()) == len(ids) and by_node["http-1"] == len(done_over_http) > 0 and by_node["n1"] > 0


async def test_an_http_only_nodes_reports_pass_the_servers_per_node_permissions(tmp_path: Path) -> None:
    # With `rr auth gen`'s credentials a node may publish only subjects of its own source: the API
    # relays an HTTP-only node's reports under its own node's source, with that node in the body.
    tokens_file, token = _tokens(tmp_path)
    with auth_server(tmp_path) as (fleet, server):
        admin = await open_as(fleet, "admin", node_id="laptop")
        coord = await open_as(fleet, "coord-1")
        try:
            await provision(admin.js, StreamSettings())
            published = [await Publisher(coord).publish(e) for e in (
                ev.HostOnline(node="http-1", roles=["selfplay"], version="legacy"),
                *(ev.WorkAdded(work_id=w, work_type="selfplay", board_type="hex8", num_players=2) for w in ("w-a", "w-b")),
                *(ev.WorkAssigned(work_id=w, node="http-1", attempt=1, deadline=DEADLINE, epoch=4) for w in ("w-a", "w-b")),
            )]
            async with running_api(server.url, bus=coord, tokens_file=tokens_file) as api:
                await wait_caught_up(api.base, published[-1].seq)
                for w in ("w-a", "w-b"):
                    status, claimed = await _post(api, "/work/claim", {}, token["http-1"])
                    assert (status, claimed["work"]["work_id"]) == (200, w), claimed
                status, done = await _post(api, "/work/complete", {"work_id": "w-a", "attempt": 1}, token["http-1"])
                assert (status, done["status"]) == (200, "completed"), done
                status, failed = await _post(api, "/work/fail", {"work_id": "w-b", "attempt": 1, "reason": "oom"}, token["http-1"])
                assert (status, failed["status"]) == (200, "pending"), failed
                reports = [e async for _, e in events(admin) if isinstance(e, ev.WorkStarted | ev.WorkCompleted | ev.WorkAttemptFailed)]
        finally:
            await coord.close()
            await admin.close()
        assert [(e.type_name(), e.work_id, e.node, e.source) for e in reports] == [
            ("WORK_STARTED", "w-a", "http-1", "coord-1"), ("WORK_STARTED", "w-b", "http-1", "coord-1"),
            ("WORK_COMPLETED", "w-a", "http-1", "coord-1"), ("WORK_ATTEMPT_FAILED", "w-b", "http-1", "coord-1"),
        ]
        assert violations(server) == []
