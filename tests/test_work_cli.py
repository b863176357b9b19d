"""`rr work add|list|show|cancel` against a real nats-server, and invalid input that appends nothing."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from cli.main import main
from eventbus.connection import connect
from eventbus.events import Event, WorkAdded, WorkCancelled
from eventbus.history import events
from eventbus.streams import StreamSettings, provision

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def url(nats_url: str) -> str:
    async def provisioned() -> None:
        bus = await connect(nats_url, node_id="test")
        try:
            await provision(bus.js, StreamSettings())
        finally:
            await bus.close()

    asyncio.run(provisioned())
    return nats_url


def logged(url: str) -> list[Event]:
    async def read() -> list[Event]:
        bus = await connect(url, node_id="test")
        try:
            return [e async for _, e in events(bus) if isinstance(e, Event)]
        finally:
            await bus.close()

    return asyncio.run(read())


def rr(url: str, *argv: str) -> int:
    return main(["work", *argv, "--nats", url, "--node-id", "op"])


def test_add_from_json_then_list_show_and_cancel(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    seeds = '{"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": 1000}'
    assert rr(url, "add", seeds, "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    work_id = answer["work_id"]
    assert answer["success"] is True and work_id.startswith("w-") and len(work_id) == 14
    [added] = logged(url)
    assert isinstance(added, WorkAdded) and (added.num_games, added.requested_by) == (1000, "op")

    assert rr(url, "list", "--state", "pending", "--json") == 0
    [item] = json.loads(capsys.readouterr().out)
    assert (item["work_id"], item["status"]) == (work_id, "pending")

    assert rr(url, "cancel", work_id, "--reason", "no longer needed") == 0
    capsys.readouterr()
    assert rr(url, "show", work_id, "--json") == 0
    shown = [json.loads(line)["event"]["type"] for line in capsys.readouterr().out.splitlines()]
    assert shown == ["WORK_ADDED", "WORK_CANCELLED"]
    assert rr(url, "list", "--state", "pending", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert rr(url, "cancel", work_id) == 1  # already cancelled: nothing more appended
    assert [type(e) for e in logged(url)] == [WorkAdded, WorkCancelled]


def test_add_from_flags_with_params(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["add", "--type", "training", "--board", "square8", "--players", "2", "--priority", "7",
            "--target", "gpu-1", "--param", "epochs=3", "--param", "note=fast", "--param", "data=a.npz,b.npz"]
    assert rr(url, *argv) == 0
    work_id = capsys.readouterr().out.strip()
    [added] = logged(url)
    assert isinstance(added, WorkAdded) and added.work_id == work_id
    assert (added.work_type, added.num_players, added.priority, added.target_node) == ("training", 2, 7, "gpu-1")
    assert added.params == {"epochs": 3, "note": "fast", "data": "a.npz,b.npz"}
    assert rr(url, "list") == 0
    assert work_id in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "field"), [
    (['{"work_type": "mining", "board_type": "hex8", "num_players": 2}'], "work_type"),
    (['{"work_type": "selfplay", "board_type": "hex8", "num_players": 5}'], "num_players"),
    (['{"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": -1}'], "num_games"),
    (['{"work_type": "selfplay", "num_players": 2}'], "board_type"),
    (["--type", "selfplay", "--board", "hex8", "--players", "1"], "num_players"),
    (["{not json"], "body"),
])
def test_invalid_input_exits_2_naming_the_field_and_appends_nothing(
    url: str, argv: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rr(url, "add", *argv) == 2
    assert field in capsys.readouterr().err
    assert logged(url) == []


def test_cancel_or_show_of_an_unknown_item_exits_1(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert rr(url, "cancel", "w-000000000000") == 1
    assert rr(url, "show", "w-000000000000") == 1
    assert "no work item w-000000000000" in capsys.readouterr().err
    assert logged(url) == []


def test_add_from_a_json_file_or_standard_input(
    url: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "work.json"
    path.write_text('{"work_type": "evaluation", "board_type": "square8", "num_players": 2, "num_games": 40, "priority": 2,'
                    ' "params": {"candidate": "c.pth"}}')
    assert rr(url, "add", "--json-file", str(path)) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO('{"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": 1000}'))
    assert rr(url, "add", "--json-file", "-") == 0
    first, second = capsys.readouterr().out.split()
    added = logged(url)
    assert [(e.work_id, e.work_type, e.num_players, e.num_games) for e in added if isinstance(e, WorkAdded)] == [
        (first, "evaluation", 2, 40), (second, "selfplay", 2, 1000)]


@pytest.mark.parametrize(("argv", "words"), [
    (['{"work_type": "selfplay", "board_type": "hex8", "num_players": 2}', "--games", "5"], "give the work once"),
    (["--json-file", "/nonexistent/work.json"], "--json-file /nonexistent/work.json"),
    (['{"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "colour": "red"}'], "colour"),
    (["--type", "selfplay", "--board", "hex8", "--players", "2", "--param", "novalue"], "--param"),
])
def test_ambiguous_or_unreadable_input_is_refused_and_appends_nothing(
    url: str, argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rr(url, "add", *argv) == 2
    assert words in capsys.readouterr().err
    assert logged(url) == []
