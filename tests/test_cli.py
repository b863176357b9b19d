"""The `rr` and `rr-service` command lines: parsing, env defaults, exit codes, and commands on a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import msgspec
import pytest

import cli.service_main
from cli.commands.events import describe, json_line, tail_subject
from cli.main import build_parser, main
from eventbus.connection import connect
from eventbus.events import HostOnline, WorkAdded, WorkAssigned, WorkAttemptFailed, utcnow
from eventbus.history import Record
from eventbus.publisher import Publisher
from eventbus.streamstate import stream_states
from projections.sentences import sentence
from servicekit.runtime import SERVICES, ServiceEntry, service_named
from tests.bus_harness import provisioned_bus

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RR_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env.update(extra)
    return env


# ---- parsing and defaults (no server) ------------------------------------------------


def test_common_options_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RR_NATS_URL", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("RR_NODE_ID", "gpu-7")
    monkeypatch.setenv("RR_CONFIG", "/etc/rr/rr.yaml")
    args = build_parser().parse_args(["streams", "info"])
    assert (args.nats_url, args.node_id, args.config_path) == ("nats://a:4222,nats://b:4222", "gpu-7", "/etc/rr/rr.yaml")


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RR_NATS_URL", "nats://a:4222")
    monkeypatch.setenv("RR_NODE_ID", "gpu-7")
    args = build_parser().parse_args(["events", "tail", "--nats", "nats://b:1", "--node-id", "cpu-1", "--last", "5"])
    assert (args.nats_url, args.node_id, args.last) == ("nats://b:1", "cpu-1", 5)


def test_without_environment_the_url_is_left_to_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RR_NATS_URL", "RR_NODE_ID", "RR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["dlq", "list"])
    assert args.nats_url is None and args.config_path is None and args.node_id


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nosuch"],
        ["streams"],
        ["streams", "init", "--replicas", "0"],
        ["streams", "init", "--replicas", "three"],
        ["events", "tail", "--type", "NOT_AN_EVENT"],
        ["events", "tail", "--last", "3", "--since-seq", "1"],
        ["events", "tail", "--last", "-1"],
        ["events", "tail", "--aggregate", "spaceship"],
        ["up", "--nats-port", "70000"],
    ],
)
def test_bad_input_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("rr ")


def test_a_command_module_that_fails_to_import_says_so_and_spares_the_others(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser(["cli.commands.streams", "cli.commands.no_such_module"])
    assert parser.parse_args(["streams", "info"]).func.__name__ == "run_info"
    args = parser.parse_args(["no_such_module"])
    assert args.func(args) == 1
    assert "command 'no_such_module' is unavailable" in capsys.readouterr().err


def test_an_unreachable_server_is_one_line_and_exit_1(unused_tcp_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["streams", "info", "--nats", f"nats://127.0.0.1:{unused_tcp_port}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rr: cannot reach NATS at nats://127.0.0.1:")


# ---- event lines (pure) --------------------------------------------------------------


def test_tail_subject_combines_filters() -> None:
    assert tail_subject(None, None, None, None) == "rr.evt.>"
    assert tail_subject("WORK_FAILED", None, None, None) == "rr.evt.*.*.WORK_FAILED.*"
    assert tail_subject(None, "gpu-7", None, None) == "rr.evt.*.*.*.gpu-7"
    assert tail_subject(None, None, "work", "w.1") == "rr.evt.work.w_1.*.*"
    assert tail_subject("WORK_STARTED", "gpu-7", "work", None) == "rr.evt.work.*.WORK_STARTED.gpu-7"


def test_an_event_line_shows_sequence_type_subject_facts_and_source() -> None:
    event = WorkAssigned(work_id="w-1", node="gpu-3", attempt=2, deadline=utcnow(), epoch=7, source="leader-1", ts=utcnow())
    line = describe(42, event)
    assert line.split()[0] == "42"
    for part in ("WORK_ASSIGNED", "work/w-1", "node=gpu-3", "attempt=2", "epoch=7", "(by leader-1)"):
        assert part in line


TRACEBACK_TAIL = (
    'Traceback (most recent call last):\n  File "<frozen runpy>", line 198, in _run_module_as_main\n'
    '  File "/srv/rr/services/workload/selfplay.py", line 9, in <module>\n    import numpy as np\n'
    "ModuleNotFoundError: No module named 'numpy'\n"
)


def test_a_failed_attempt_is_one_line_with_its_whole_cause_and_no_traceback() -> None:
    event = WorkAttemptFailed(work_id="w-1", node="gpu-3", attempt=1, reason="exited with status 1", exit_code=1,
                              stderr_tail=TRACEBACK_TAIL, cause="ModuleNotFoundError: No module named 'numpy'", ts=utcnow())
    line = describe(9, event)
    assert "\n" not in line and "frozen runpy" not in line
    assert "cause=ModuleNotFoundError: No module named 'numpy'" in line and "reason=exited with status 1" in line
    assert sentence(event).endswith("failed on gpu-3: exited with status 1 (exit 1) -- ModuleNotFoundError: No module named 'numpy'")


def test_a_json_line_carries_the_event_or_why_it_could_not_be_decoded() -> None:
    event = HostOnline(node="gpu-3", source="gpu-3")
    good = json.loads(json_line(Record(5, event.subject(), msgspec.json.encode(event))))
    assert good["seq"] == 5 and good["event"]["type"] == "HOST_ONLINE" and good["event"]["node"] == "gpu-3"
    bad = json.loads(json_line(Record(6, "rr.evt.x.y.Z.n", b"{not json")))
    assert bad["seq"] == 6 and "error" in bad


# ---- commands against a real server --------------------------------------------------


async def _rr(*argv: str, timeout: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *argv,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=_clean_env(), cwd=PROJECT_ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_streams_init_reports_created_then_unchanged(nats_url: str) -> None:
    code, out, _ = await _rr("streams", "init", "--nats", nats_url)
    assert code == 0
    assert out.splitlines() == ["RR_EVENTS: created", "RR_CONTEXT: created", "RR_TELEMETRY: created", "RR_DEADLETTER: created", "KV_rr_leases: created"]
    code, out, _ = await _rr("streams", "init", "--nats", nats_url)
    assert code == 0
    assert out.splitlines() == ["RR_EVENTS: unchanged", "RR_CONTEXT: unchanged",
                                 "RR_TELEMETRY: unchanged", "RR_DEADLETTER: unchanged", "KV_rr_leases: unchanged"]
    code, out, _ = await _rr("streams", "info", "--json", "--nats", nats_url)
    assert code == 0
    infos = [json.loads(line) for line in out.splitlines()]
    assert [(i["name"], i["exists"], i["replicas"]) for i in infos] == [
        ("RR_EVENTS", True, 1), ("RR_CONTEXT", True, 1), ("RR_TELEMETRY", True, 1), ("RR_DEADLETTER", True, 1)
    ]


async def test_streams_init_hardens_an_old_bucket_and_shortens_retention_only_when_told(nats_url: str, tmp_path: Path) -> None:
    bus = await connect(nats_url, node_id="t")
    try:
        await bus.js.create_object_store("rr_models")  # as rr made buckets before: rollups allowed, purges too
        code, out, _ = await _rr("streams", "init", "--nats", nats_url)
        assert code == 0 and "OBJ_rr_models: hardened" in out.splitlines()
        info = (await bus.js.stream_info("OBJ_rr_models")).config
        assert (info.allow_rollup_hdrs, info.deny_purge) == (False, True)
        code, out, _ = await _rr("streams", "init", "--nats", nats_url)
        assert "OBJ_rr_models: unchanged" in out.splitlines()
        config = tmp_path / "rr.yaml"
        config.write_text("streams: {events_max_age_days: 1}\n")
        code, _, err = await _rr("streams", "init", "--nats", nats_url, "--config", str(config))
        assert code == 1 and "RR_EVENTS: the config lowers its retention" in err and "--allow-shorter-retention" in err
        assert (await bus.js.stream_info("RR_EVENTS")).config.max_age == 730 * 86_400.0
        code, out, _ = await _rr("streams", "init", "--nats", nats_url, "--config", str(config), "--allow-shorter-retention")
        assert code == 0 and "RR_EVENTS: updated" in out.splitlines()
    finally:
        await bus.close()


async def test_bad_input_changes_nothing_on_the_server(nats_url: str) -> None:
    code, _, err = await _rr("streams", "init", "--replicas", "0", "--nats", nats_url)
    assert code == 2 and "--replicas" in err
    bus = await connect(nats_url, node_id="t")
    try:
        assert not any(s.exists for s in await stream_states(bus))
    finally:
        await bus.close()


async def test_streams_info_says_a_stream_is_missing(nats_url: str) -> None:
    code, out, _ = await _rr("streams", "info", "--nats", nats_url)
    assert code == 1
    assert "missing: run `rr streams init`" in out


async def test_events_tail_last_n_json_prints_the_last_n_events_then_follows(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="gpu-7") as bus:
        pub = Publisher(bus)
        for i in range(5):
            await pub.publish(WorkAdded(work_id=f"w-{i}", work_type="selfplay", board_type="hex8", num_players=2))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "events", "tail", "--last", "3", "--json", "--nats", nats_url,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=_clean_env(), cwd=PROJECT_ROOT,
        )
        try:
            assert proc.stdout is not None
            lines = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 20)) for _ in range(3)]
            assert [line["seq"] for line in lines] == [3, 4, 5]
            assert [line["event"]["work_id"] for line in lines] == ["w-2", "w-3", "w-4"]
            # Live: an event published now arrives on the same feed.
            await pub.publish(HostOnline(node="gpu-9"))
            live = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
            assert live["seq"] == 6 and live["event"]["type"] == "HOST_ONLINE"
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()


async def test_events_tail_filters_by_type_without_following(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="gpu-7") as bus:
        pub = Publisher(bus)
        for i in range(4):
            await pub.publish(WorkAdded(work_id=f"w-{i}", work_type="selfplay", board_type="hex8", num_players=2))
            await pub.publish(HostOnline(node=f"gpu-{i}"))
    code, out, _ = await _rr("events", "tail", "--type", "host_online", "--last", "2", "--no-follow", "--nats", nats_url)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and all("HOST_ONLINE" in line for line in lines)
    assert "host/gpu-2" in lines[0] and "host/gpu-3" in lines[1]


async def test_dlq_list_on_an_empty_dead_letter_stream(nats_url: str) -> None:
    async with provisioned_bus(nats_url):
        code, out, _ = await _rr("dlq", "list", "--nats", nats_url)
    assert code == 0 and out.strip() == "no parked messages"


# ---- rr-service -----------------------------------------------------------------------


def test_rr_service_unknown_name_exits_2_listing_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.service_main.main(["nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown service 'nosuch'" in err
    for name in SERVICES:
        assert name in err


def test_rr_service_list(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(SERVICES, "zz-test", ServiceEntry(name="zz-test", target="tests.nowhere:main", description="a test entry"))
    assert cli.service_main.main(["--list"]) == 0
    assert "zz-test" in capsys.readouterr().out


def test_rr_service_runs_the_leader_by_its_former_name_scheduler(capsys: pytest.CaptureFixture[str]) -> None:
    # systemd units and runbooks in the field start `rr-service scheduler`; it is the leader now
    assert service_named("scheduler") is service_named("leader") is SERVICES["leader"]
    assert "scheduler" not in SERVICES  # rr up starts it once, by its name
    assert service_named("nosuch") is None
    assert cli.service_main.main(["--list"]) == 0
    assert "(formerly scheduler)" in next(line for line in capsys.readouterr().out.splitlines() if line.startswith("leader "))


def test_rr_service_bad_config_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(SERVICES, "zz-test", ServiceEntry(name="zz-test", target="tests.nowhere:main", description="a test entry"))
    config = tmp_path / "rr.yaml"
    config.write_text("streams:\n  replicas: lots\n")
    assert cli.service_main.main(["zz-test", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(config) in err[0] and "streams.replicas" in err[0]
