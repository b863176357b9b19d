"""`rr-service api` on a real nats-server: the seeds' endpoints from live projections, POST /work/add, errors."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cli.up.layout import Layout
from cli.up.session import UpPlan, api_url, banner, children_for
from config.sections.api import PORT_ENV, ApiSettings, resolved_port
from config.settings import RrConfig, load_config
from eventbus import events as ev
from eventbus.errors import InvalidConfig
from eventbus.history import Record, events, last_sequence
from eventbus.natsserver import NatsServer, free_port
from eventbus.publisher import Publisher
from eventbus.snapshots import kept_snapshots
from projections import bundle, timelinestart
from projections.bundle import fold_all_events
from projections.status_view import status_view
from servicekit.looplag import LoopLagStats
from servicekit.rebuild import state_at_seq
from services.api.documents import events_after, feed_event
from services.api.keeper import Current, ProjectionKeeper
from services.api.routes import RETRY, Api, ApiError
from services.api.server import open_server
from tests.api_harness import fleet_log, running_api, wait_caught_up
from tests.bus_harness import provisioned_bus

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SEEDS_WORK = b'{"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": 1000}'


@pytest.fixture(autouse=True)
def _no_port_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_ENV, raising=False)


def _without_clock(doc: dict[str, Any]) -> dict[str, Any]:
    # as_of and data freshness are measured against "now", which differs between two readings.
    doc = {k: v for k, v in doc.items() if k != "as_of"}
    doc["data"] = {c: {k: v for k, v in d.items() if k != "freshness_s"} for c, d in doc["data"].items()}
    return doc


async def test_status_peers_and_work_status_are_the_projections_with_the_seeds_field_names(nats_url: str) -> None:
    async with running_api(nats_url) as api:
        published = await api.publish(*fleet_log())
        await wait_caught_up(api.base, published[-1].seq)
        answer = await api.get("/status")
        assert (answer.status, answer.headers["Content-Type"]) == (200, "application/json")
        status = answer.json()
        assert (status["leader_id"], status["alive_peers"], status["role"], status["node_id"]) == ("gpu-1", 3, "leader", "gpu-1")
        assert [(n["node_id"], n["status"]) for n in status["nodes"]] == [
            ("cpu-9", "offline"), ("gpu-1", "online"), ("gpu-2", "online"), ("gpu-3", "online"),
        ]
        assert {role: (lead["node"], lead["epoch"]) for role, lead in status["leaders"].items()} == {
            "promoter": ("gpu-2", 2), "scheduler": ("gpu-1", 4),
        }
        hex8 = status["models"]["hex8_2p"]
        assert (hex8["model_id"], hex8["elo"], hex8["elo_interval"]) == ("m-hex8-2", 1590.0, 60.0)
        # The same document as `rr status --json` folds from the log.
        rebuilt = await state_at_seq(api.bus)
        expected = msgspec.json.decode(msgspec.json.encode(status_view(rebuilt.state, now=ev.utcnow(), node_id="gpu-1")))
        assert _without_clock(status) == _without_clock(expected)

        peers = (await api.get("/peers")).json()
        assert (peers["leader_id"], peers["alive_peers"], peers["total"]) == ("gpu-1", 3, 4)
        gpu1 = next(p for p in peers["peers"] if p["node_id"] == "gpu-1")
        assert (gpu1["cpu_count"], gpu1["gpus"], gpu1["leads"]) == (32, ["H100", "H100"], ["scheduler"])

        work = (await api.get("/work/status")).json()
        assert work["counts"] == {"pending": 1, "assigned": 1, "running": 1, "completed": 1, "failed": 1, "cancelled": 0}
        assert work["total"] == 5 and work["by_node"] == {"gpu-2": {"running": 1}, "gpu-3": {"assigned": 1}}
        assert work["by_config"] == {"hex8_2p": {"running": 1, "failed": 1}, "square8_2p": {"completed": 1, "assigned": 1, "pending": 1}}
        assert [i["work_id"] for i in work["items"]] == ["w-4", "w-3", "w-2", "w-1", "w-5"]  # newest change first
        running = (await api.get("/work/status?status=running&limit=1")).json()
        assert [(i["work_id"], i["node"], i["progress"], i["config"]) for i in running["items"]] == [("w-2", "gpu-2", 0.4, "hex8_2p")]
        assert running["items_matching"] == 1

        elo = (await api.get("/api/elo")).json()
        # One scale: the ratings of MODEL_RATED, not the evaluations' score differences (70 each).
        assert [(p["model_id"], p["elo"], p["interval"], p["generation"]) for p in elo["configs"]["hex8_2p"]] == [
            ("m-hex8-0", 1500.0, 40.0, 1), ("m-hex8-1", 1545.0, 50.0, 2), ("m-hex8-2", 1590.0, 60.0, 3),
            ("m-hex8-x", 1480.0, 60.0, None),
        ]
        assert elo["promoted"] == {"hex8_2p": "m-hex8-2"}


async def test_health_reports_the_node_the_log_position_and_the_connection(nats_url: str) -> None:
    async with running_api(nats_url) as api:
        published = await api.publish(*fleet_log()[:3])
        await wait_caught_up(api.base, published[-1].seq)
        answer = await api.get("/health")
        health = answer.json()
        assert answer.status == 200
        assert (health["status"], health["node_id"], health["nats_connected"], health["caught_up"]) == ("ok", "gpu-1", True, True)
        assert health["last_seq"] == published[-1].seq and health["events_folded"] == 3
        assert health["uptime_s"] >= 0 and health["loop_lag_s"] >= 0


async def test_new_events_reach_status_and_the_live_feed_in_order(nats_url: str, eventually) -> None:
    async with running_api(nats_url, recent_events=5) as api:
        first = await api.publish(*fleet_log()[:8])
        await wait_caught_up(api.base, first[-1].seq)
        feed = (await api.get("/api/events")).json()
        assert [e["seq"] for e in feed["events"]] == [4, 5, 6, 7, 8]  # the ring keeps the newest five
        assert (feed["oldest_seq"], feed["last_seq"]) == (4, 8)
        assert feed["events"][-1]["text"] == "work w-1 added by operator: selfplay square8_2p, 1000 games"

        await api.publish(ev.HostOnline(node="gpu-7", roles=["selfplay"], version="0.1.1", epoch=4))

        async def gpu7_alive() -> bool:
            status = (await api.get("/status")).json()
            return any(n["node_id"] == "gpu-7" and n["alive"] for n in status["nodes"])

        await eventually(gpu7_alive, message="gpu-7 online in /status")
        later = (await api.get("/api/events?after=8")).json()
        assert [(e["seq"], e["type"], e["about"], e["source"]) for e in later["events"]] == [(9, "HOST_ONLINE", "gpu-7", "gpu-1")]
        assert later["last_seq"] == 9
        assert (await api.get("/api/events?after=9")).json()["events"] == []


def _stream_batches(
    url: str, count: int, headers: dict[str, str], batches: list[tuple[str, dict[str, Any]]] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The first `count` (id, EventsDoc) batches of a server-sent event stream, appended to `batches` as they come."""
    batches = [] if batches is None else batches
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                event[name] = value.removeprefix(" ")
            elif not line and "data" in event:
                batches.append((event["id"], json.loads(event["data"])))
                event = {}
                if len(batches) == count:
                    return batches
    return batches


async def test_the_event_stream_pushes_each_batch_of_new_events_and_resumes_from_last_event_id(nats_url: str, eventually) -> None:
    async with running_api(nats_url) as api:
        first = await api.publish(*fleet_log()[:3])
        await wait_caught_up(api.base, first[-1].seq)
        seen: list[tuple[str, dict[str, Any]]] = []
        reading = asyncio.ensure_future(asyncio.to_thread(_stream_batches, api.base + "/api/stream?after=1", 2, {}, seen))
        await eventually(lambda: seen, message="the backlog arrived")
        await api.publish(ev.HostOnline(node="gpu-7", roles=["selfplay"], version="0.1.1"))
        (first_id, backlog), (second_id, pushed) = await asyncio.wait_for(reading, 30)
        assert [e["seq"] for e in backlog["events"]] == [2, 3] and first_id == "3"
        assert [(e["seq"], e["about"]) for e in pushed["events"]] == [(4, "gpu-7")] and second_id == "4"
        # A reconnecting EventSource sends the last id it saw, and gets only what came after.
        (_, resumed), = await asyncio.to_thread(_stream_batches, api.base + "/api/stream", 1, {"Last-Event-ID": "2"})
        assert [e["seq"] for e in resumed["events"]] == [3, 4]


async def test_post_work_add_appends_work_added_and_answers_like_the_seeds(nats_url: str) -> None:
    async with running_api(nats_url) as api:
        answer = await api.send("POST", "/work/add", SEEDS_WORK, {"Content-Type": "application/json"})
        assert answer.status == 200, answer.body
        doc = answer.json()
        assert doc["success"] is True and doc["work_id"].startswith("w-") and doc["status"] == "pending"
        logged = [e async for _, e in events(api.bus)]
        assert len(logged) == 1
        added = logged[0]
        assert isinstance(added, ev.WorkAdded)
        assert (added.work_id, added.work_type, added.board_type, added.num_players, added.num_games, added.source) == (
            doc["work_id"], "selfplay", "hex8", 2, 1000, "gpu-1",
        )
        assert doc["seq"] == await last_sequence(api.bus)
        # Read-your-writes: the answer came once the item was folded.
        items = (await api.get("/work/status")).json()["items"]
        assert [(i["work_id"], i["status"], i["config"]) for i in items] == [(doc["work_id"], "pending", "hex8_2p")]


BAD_REQUESTS = [
    ("POST", "/work/add", b'{"work_type": "selfplay"', {}, 400, "not valid JSON"),
    ("POST", "/work/add", b"", {}, 400, "empty body"),
    ("POST", "/work/add", b"[1, 2]", {}, 400, "expected a JSON object"),
    ("POST", "/work/add", b'{"work_type": "selfplay", "num_players": 2}', {}, 400, "board_type: missing"),
    ("POST", "/work/add", b'{"work_type": "juggling", "board_type": "hex8", "num_players": 2}', {}, 400, "work_type: no command template for 'juggling'"),
    ("POST", "/work/add", b'{"work_type": "selfplay", "board_type": "hex8", "num_players": 9}', {}, 400, "num_players: hex8 is played by 2 players, not 9"),
    ("POST", "/work/add", b'{"work_type": "selfplay", "board_type": "hex8", "num_players": "2"}', {}, 400, "num_players: Expected `int`, got `str`"),
    ("POST", "/work/add", b'{"work_type": "selfplay", "board_type": "", "num_players": 2}', {}, 400, "board_type: Expected `str` of length >= 1"),
    ("POST", "/work/add", b'{"work_type": "selfplay", "board_type": "  ", "num_players": 2}', {}, 400,
     "board_type: unknown board '  ': choose one of hex8, square8"),
    ("POST", "/work/add", b'{"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "gpus": 8}', {}, 400, "gpus: unknown field"),
    ("POST", "/work/add", b"x" * 70_000, {}, 413, "over the limit of 65536 bytes"),
    ("GET", "/work/add", None, {}, 405, "GET is not allowed on /work/add; use POST"),
    ("POST", "/status", b"{}", {}, 405, "POST is not allowed on /status; use GET"),
    ("DELETE", "/peers", None, {}, 405, "DELETE is not allowed on /peers"),
    ("GET", "/election/begin", None, {}, 404, "no such endpoint: /election/begin"),
    ("GET", "/api/events?after=soon", None, {}, 400, "after: expected a non-negative integer of at most 18 ASCII digits, got 'soon'"),
    ("GET", "/work/status?status=lost", None, {}, 400, "status: expected one of pending, assigned, running"),
    ("GET", "/work/status?limit=-1", None, {}, 400, "limit: expected a non-negative integer"),
]


async def test_bad_requests_get_4xx_with_reasons_and_append_nothing(nats_url: str) -> None:
    async with running_api(nats_url) as api:
        await wait_caught_up(api.base, 0)
        for method, path, body, headers, status, reason in BAD_REQUESTS:
            answer = await api.send(method, path, body, headers)
            assert answer.status == status, (method, path, answer.body)
            doc = answer.json()
            assert reason in doc["error"] and doc["success"] is False, (method, path, doc)
        assert (await api.send("POST", "/status", b"{}")).headers["Allow"] == "GET"
        head = await api.send("HEAD", "/health")  # as GET, without the body (`curl -I`)
        assert (head.status, head.body, head.headers["Content-Type"]) == (200, b"", "application/json")
        assert await last_sequence(api.bus) == 0
        assert (await api.get("/health")).status == 200  # still serving after all of that


async def test_the_seeds_runbook_one_liners_print_the_leader_and_alive_count(nats_url: str) -> None:
    async with running_api(nats_url) as api:
        published = await api.publish(*fleet_log())
        await wait_caught_up(api.base, published[-1].seq)
        fetch = f"curl -s {api.base}/status" if shutil.which("curl") else (
            f"{sys.executable} -c 'import urllib.request,sys; sys.stdout.buffer.write(urllib.request.urlopen(\"{api.base}/status\").read())'"
        )
        # 004's "Verify it's running" one-liner, verbatim after the URL.
        out = await _shell(f"""{fetch} | python3 -c 'import sys,json; print(json.load(sys.stdin).get("leader_id"))'""")
        assert out == "gpu-1\n"
        # 002's quick status check and 004's cluster formation check. Their \\" escapes inside the f-string
        # braces are a SyntaxError for Python itself, so the quotes are the only change.
        out = await _shell(fetch + """ | python3 -c '
import sys, json
d = json.load(sys.stdin)
print(f"Leader: {d.get('"'leader_id'"')}")
print(f"Alive peers: {d.get('"'alive_peers'"')}")
print(f"Total nodes: {len(d.get('"'nodes'"', []))}")
'""")
        assert out == "Leader: gpu-1\nAlive peers: 3\nTotal nodes: 4\n"


async def _shell(command: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", f"set -o pipefail; {command}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_health_is_503_and_work_add_refused_while_nats_is_down_then_both_recover(nats_server: NatsServer, eventually) -> None:
    async with running_api(nats_server.url) as api:
        await wait_caught_up(api.base, 0)
        nats_server.kill()

        async def health_is(status: int, text: str) -> bool:
            answer = await api.get("/health")
            return (answer.status, answer.json()["status"]) == (status, text)

        await eventually(lambda: health_is(503, "nats_disconnected"), message="503 while NATS is down")
        refused = await api.send("POST", "/work/add", SEEDS_WORK)
        assert refused.status == 503 and "nothing was added" in refused.json()["error"]
        assert (await api.get("/status")).status == 200  # the last known state is still served
        await asyncio.to_thread(nats_server.restart)
        await eventually(lambda: health_is(200, "ok"), timeout=15, message="ok after the restart")
        added = await api.send("POST", "/work/add", SEEDS_WORK)
        assert added.status == 200, added.body
        items = (await api.get("/work/status")).json()["items"]
        assert [i["work_id"] for i in items] == [added.json()["work_id"]]  # followed the log again
        assert await last_sequence(api.bus) == 1  # the refused request left nothing behind


async def test_the_api_snapshots_every_n_events_and_a_restarted_api_starts_from_it(nats_url: str, eventually) -> None:
    log = fleet_log()
    async with running_api(nats_url, snapshot_every_events=10, snapshot_min_interval_s=0) as api:
        published = await api.publish(*log)
        await wait_caught_up(api.base, published[-1].seq)

        async def snapshot_past(seq: int) -> bool:
            kept = await kept_snapshots(api.bus, "all", bundle.PROJECTION.version)
            return bool(kept) and kept[-1] >= seq

        await eventually(lambda: snapshot_past(20), message="a snapshot at seq 20 or later")
        first = (await api.get("/status")).json()
        # Beside it, the cluster part a work item's timeline starts from, at the bundle's position.
        async def cluster_beside_each() -> bool:
            beside = await kept_snapshots(api.bus, timelinestart.PROJECTION.name, timelinestart.PROJECTION.version)
            return bool(beside) and set(await kept_snapshots(api.bus, "all", bundle.PROJECTION.version)) <= set(beside)

        await eventually(cluster_beside_each, message="a timeline-cluster snapshot beside each bundle snapshot")
    async with running_api(nats_url) as again:
        await wait_caught_up(again.base, published[-1].seq)
        health = (await again.get("/health")).json()
        assert health["snapshot_seq"] >= 20 and health["events_folded"] == len(log) - health["snapshot_seq"]
        assert _without_clock((await again.get("/status")).json()) == _without_clock(first)


async def test_rr_status_no_longer_writes_a_snapshot_unless_asked(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="gpu-1") as bus:
        await Publisher(bus).publish_many(fleet_log()[:4])
        code, out, err = await _rr(nats_url, "status", "--json")
        assert code == 0, err
        assert msgspec.json.decode(out)["leader_id"] == "gpu-1"
        assert await kept_snapshots(bus, "all", bundle.PROJECTION.version) == []
        code, _, err = await _rr(nats_url, "status", "--save-snapshot")
        assert code == 0, err
        assert await kept_snapshots(bus, "all", bundle.PROJECTION.version) == [4]


async def _rr(url: str, *argv: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RR_")} | {"PYTHONPATH": str(PROJECT_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *argv, "--nats", url, "--node-id", "gpu-1",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        cwd=PROJECT_ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_rr_service_api_with_api_port_serves_and_stops_on_sigterm(nats_url: str, eventually) -> None:
    async with provisioned_bus(nats_url, node_id="gpu-1"):
        pass  # streams exist before the service checks for them
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RR_")} | {"PYTHONPATH": str(PROJECT_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.service_main", "api", "--nats", nats_url, "--node-id", "edge-1",
        "--api-port", str(port), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=PROJECT_ROOT,
    )
    try:
        await wait_caught_up(f"http://127.0.0.1:{port}", 0)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert f"serving http://127.0.0.1:{port}/" in err.decode()

    wrong = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.service_main", "agent", "--api-port", "9000", "--nats", nats_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=PROJECT_ROOT,
    )
    _, err = await asyncio.wait_for(wrong.communicate(), 30)
    assert wrong.returncode == 2 and "applies to the api service only" in err.decode()


def test_a_taken_port_is_a_one_line_config_error() -> None:
    port = free_port()
    with open_server("127.0.0.1", port) as first:
        with pytest.raises(InvalidConfig, match=f"api: cannot listen on 127.0.0.1:{port}: Address already in use"):
            open_server("127.0.0.1", port)
        assert first.getsockname()[1] == port


def _api_over(current: Current, work_refusal: str | None = None) -> Api:
    keeper = ProjectionKeeper(None, snapshot_every=10, recent=10)  # type: ignore[arg-type]  # never run: no bus needed
    keeper.current = current
    return Api(
        keeper, ApiSettings(), node_id="gpu-1", started=0.0, lag=lambda: LoopLagStats(0.0, 0.0, 0, 0),
        connected=lambda: True, add_work=lambda event: pytest.fail("nothing is published"),
        work_refusal=work_refusal,
    )


async def test_an_api_on_credentials_that_may_not_add_work_refuses_at_once_naming_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.auth.generate import generate
    from services.api.service import work_refusal
    from tests.auth_harness import HOSTS

    (tmp_path / "hosts.yaml").write_text(HOSTS)
    creds = generate(tmp_path / "hosts.yaml", tmp_path / "auth").credentials
    for user, refused in (("gpu-1", True), ("coord-1", False), ("admin", False)):
        monkeypatch.setenv("RR_NATS_CREDS", creds[user])
        assert (await work_refusal() is not None) == refused, user
    monkeypatch.delenv("RR_NATS_CREDS")
    assert await work_refusal() is None  # no authentication
    monkeypatch.setenv("RR_NATS_CREDS", creds["gpu-1"])
    api = _api_over(Current(state=fold_all_events([]), recent=(), caught_up=True, log_end_seq=0, snapshot_seq=0), work_refusal=await work_refusal())
    with pytest.raises(ApiError) as refused:
        await api.work_add(SEEDS_WORK, "")
    assert refused.value.status == 403
    assert "credentials of gpu-1 (role worker), which may not append WORK_ADDED" in refused.value.reason


def test_until_the_history_is_folded_data_endpoints_answer_503_and_health_says_catching_up() -> None:
    state = fold_all_events(enumerate(fleet_log()[:5], 1))
    api = _api_over(Current(state=state, recent=(), caught_up=False, log_end_seq=900, snapshot_seq=0))
    for endpoint in (api.status, api.peers, api.elo, lambda: api.work_status(limit=None, status=None)):
        with pytest.raises(ApiError) as refused:
            endpoint()
        assert (refused.value.status, refused.value.headers) == (503, RETRY)
        assert "starting: folded the log to seq 5 of 900" in refused.value.reason
    assert api.health().status == "catching_up"
    assert api.events(after=None, limit=None).last_seq == 5  # the feed shows what has been folded so far


def test_the_feed_resumes_after_the_position_it_was_given() -> None:
    records = tuple(Record(seq, f"rr.evt.host.n{seq}.HOST_ONLINE.x", ev.encode(ev.HostOnline(node=f"n{seq}"))) for seq in range(5, 9))
    assert [e.seq for e in events_after(records, 6, limit=200, last_seq=8).events] == [7, 8]
    assert [e.seq for e in events_after(records, 0, limit=2, last_seq=8).events] == [7, 8]  # the newest when limited
    restarted = events_after(records, 50, limit=200, last_seq=8)  # a client of an api that ran on a longer log
    assert (restarted.events, restarted.last_seq, restarted.oldest_seq) == ([], 8, 5)
    broken = feed_event(Record(9, "rr.evt.host.n9.HOST_ONLINE.x", b"{not json"))
    assert (broken.type, broken.text.startswith("undecodable:")) == ("HOST_ONLINE", True)


def test_the_port_comes_from_rr_api_port_else_the_config(tmp_path: Path) -> None:
    assert resolved_port(ApiSettings(port=9000), {}) == 9000
    assert resolved_port(ApiSettings(port=9000), {PORT_ENV: "18000"}) == 18000
    with pytest.raises(InvalidConfig, match="RR_API_PORT='eighty': not a TCP port"):
        resolved_port(ApiSettings(), {PORT_ENV: "eighty"})
    good = tmp_path / "rr.yaml"
    good.write_text("api:\n  host: 0.0.0.0\n  port: 8771\n  snapshot_every_events: 500\n")
    assert load_config(good).api == ApiSettings(host="0.0.0.0", port=8771, snapshot_every_events=500)
    assert load_config(None).api == ApiSettings(host="127.0.0.1", port=8770)  # loopback unless the config opens it
    bad = tmp_path / "bad.yaml"
    bad.write_text("api:\n  port: 70000\n")
    with pytest.raises(InvalidConfig, match=r"api\.port: Expected `int` <= 65535"):
        load_config(bad)


def test_rr_up_api_port_reaches_the_services_environment_and_the_banner(tmp_path: Path) -> None:
    plan = UpPlan(layout=Layout.under(tmp_path), nats_url=None, host="127.0.0.1", port=4222, node_id="lap-1",
                  config_path=None, api_port=18123)
    children = children_for(plan, "nats://127.0.0.1:4222")
    assert {c.env.get(PORT_ENV) for c in children} == {"18123"}
    assert "api" in [c.name for c in children]
    url = api_url(plan, RrConfig(), children)
    assert url == "http://127.0.0.1:18123"
    assert f"rr up: dashboard {url}/ (status API: curl -s {url}/status)" in banner(plan, "nats://x", children, True, url)
    default = msgspec.structs.replace(plan, api_port=None)
    assert all(PORT_ENV not in c.env for c in children_for(default, "nats://x"))  # the config's port then
    assert api_url(default, RrConfig(), children) == "http://127.0.0.1:8770"
