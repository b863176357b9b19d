"""One work request, whichever door it comes through: `rr work add` (JSON or flags) and POST /work/add."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cli.commands.work import seeds_from_args
from cli.main import build_parser, main
from config.settings import load_config
from eventbus.events import WorkAdded
from eventbus.history import events
from servicekit.admission import AdmissionRules, admit
from servicekit.workrequest import InvalidWork, WorkSeeds, decode_seeds, new_work_id, parse_param, seeds_from_fields
from tests.api_harness import running_api, wait_caught_up

pytestmark = pytest.mark.timeout(90)

RULES = AdmissionRules(hosts=("cpu-1", "gpu-1"), hosts_file="/etc/rr/hosts.yaml")
# One request as a client posts it and as an operator types it.
REQUEST: dict[str, Any] = {"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": 50, "priority": 3,
                           "target_node": "gpu-1", "params": {"sims": 64, "temperature": 0.5, "resign": True, "tag": "night-run"}}
FLAGS = ["--type", "selfplay", "--board", "hex8", "--players", "2", "--games", "50", "--priority", "3", "--target", "gpu-1",
         "--param", "sims=64", "--param", "temperature=0.5", "--param", "resign=true", "--param", "tag=night-run"]


def from_cli(*argv: str) -> WorkSeeds:
    return seeds_from_args(build_parser().parse_args(["work", "add", *argv]))


def test_json_and_flags_make_the_same_request_and_the_same_work_added() -> None:
    as_posted = decode_seeds(json.dumps(REQUEST).encode())
    for typed in (from_cli(*FLAGS), from_cli(json.dumps(REQUEST))):
        assert typed == as_posted
        assert admit(typed, RULES, work_id="w-1", requested_by="op") == admit(as_posted, RULES, work_id="w-1", requested_by="op")
    event = admit(as_posted, RULES, work_id="w-1", requested_by="op")
    assert isinstance(event, WorkAdded) and event.params == REQUEST["params"]


def test_the_same_mistake_names_the_same_field_at_either_door() -> None:
    for fields, flags, field in (({"work_type": "selfplay", "num_players": 2}, ["--type", "selfplay", "--players", "2"], "board_type"),
                                 ({"board_type": "hex8", "num_players": 2}, ["--board", "hex8", "--players", "2"], "work_type")):
        with pytest.raises(InvalidWork) as posted:
            decode_seeds(json.dumps(fields))
        with pytest.raises(InvalidWork) as typed:
            from_cli(*flags)
        assert posted.value.field == typed.value.field == field and str(posted.value) == str(typed.value)


def test_a_param_is_key_equals_value_and_keeps_text_that_is_no_scalar() -> None:
    assert [parse_param(p) for p in ("n=3", "x=0.5", "on=false", "name=hex", "list=[1,2]", "empty=")] == [
        ("n", 3), ("x", 0.5), ("on", False), ("name", "hex"), ("list", "[1,2]"), ("empty", "")]
    with pytest.raises(InvalidWork, match="expected KEY=VALUE") as caught:
        seeds_from_fields({"work_type": "selfplay", "board_type": "hex8", "num_players": 2}, ["novalue"])
    assert caught.value.field == "params"


def test_work_ids_have_one_form() -> None:
    ids = {new_work_id() for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("w-") and len(i) == 14 for i in ids)


async def test_the_api_and_the_cli_store_the_same_work_added(nats_url: str, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  gpu-1: {gpu: H100 80GB}\n")
    config = tmp_path / "rr.yaml"
    config.write_text(f"hosts_file: {hosts}\n")
    async with running_api(nats_url, config=load_config(config)) as api:
        await wait_caught_up(api.base, 0)
        posted = await api.send("POST", "/work/add", json.dumps(REQUEST).encode(), {"Content-Type": "application/json"})
        assert posted.status == 200, posted.json()
        for typed in (FLAGS, [json.dumps(REQUEST)]):
            argv = ["work", "add", *typed, "--nats", nats_url, "--node-id", "op", "--config", str(config)]
            assert await asyncio.to_thread(main, argv) == 0
        stored = [e async for _, e in events(api.bus) if isinstance(e, WorkAdded)]
    assert len({e.work_id for e in stored}) == len(stored) == 3
    assert [e.requested_by for e in stored] == ["api:gpu-1", "op", "op"]
    # the same item but for its id, who asked, and the envelope its publisher stamped
    requests = [msgspec.structs.replace(e, work_id="", requested_by="", id="", ts=None, source="", trace=None) for e in stored]
    assert requests[0] == requests[1] == requests[2] and requests[0].params == REQUEST["params"]
