"""Admission: one validator; every refused request is refused by POST /work/add and `rr work add` alike, appending nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest
import yaml

from cli.main import main
from config.hosts import HostEntry, HostsConfig
from config.sections.admission import REFERENCE_CONFIGS, AdmissionSettings
from config.settings import RrConfig, load_config
from eventbus.errors import InvalidConfig
from eventbus.events import WorkAdded
from eventbus.history import last_sequence
from servicekit.admission import AdmissionRules, admit, admitted, refusals, rules_for
from servicekit.workrequest import InvalidWork, WorkSeeds, decode_seeds
from tests.api_harness import running_api, wait_caught_up

pytestmark = pytest.mark.timeout(90)

HOSTS = HostsConfig(hosts={"gpu-1": HostEntry(gpu="H100 80GB"), "cpu-1": HostEntry(role="cpu_selfplay")})
RULES = AdmissionRules(hosts=("cpu-1", "gpu-1"), hosts_file="/etc/rr/hosts.yaml")


def seeds(**fields: object) -> WorkSeeds:
    base: dict[str, object] = {"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": 100}
    return msgspec.convert(base | fields, WorkSeeds)


def test_the_reference_configs_are_the_reference_workloads_boards_and_players() -> None:
    from workload.game import BOARDS, SUPPORTED_PLAYERS

    assert sorted(REFERENCE_CONFIGS) == sorted(f"{b}_{n}p" for b in BOARDS for n in SUPPORTED_PLAYERS)


@pytest.mark.parametrize(("fields", "field", "valid"), [
    ({"board_type": "chess"}, "board_type", "choose one of hex8, square8"),
    ({"num_players": 4}, "num_players", "hex8 is played by 2 players, not 4"),
    ({"work_type": "copy"}, "work_type", "choose one of evaluation, selfplay, sync, tournament, training"),
    ({"work_type": "sync", "target_node": "gpu-1"}, "params.batch_id", "sync copies one batch, name it"),
    ({"work_type": "sync", "params": {"batch_id": "b1"}}, "target_node", "sync copies to one node, name it"),
    ({"work_type": "tournament"}, "params.models", "worker.templates.tournament needs {models}"),
    ({"num_games": None}, "num_games", "admission.default_num_games.selfplay"),
    ({"num_games": 0}, "num_games", "1..100000"),
    ({"num_games": 10**7}, "num_games", "1..100000"),
    ({"priority": 10**6}, "priority", "-1000..1000"),
    ({"priority": -1001}, "priority", "-1000..1000"),
    ({"target_node": "ghost-node"}, "target_node", "choose one of cpu-1, gpu-1"),
    ({"work_type": "training"}, "params.data", "worker.templates.training needs {data}"),
    ({"work_type": "evaluation"}, "params.candidate", "worker.templates.evaluation needs {candidate}"),
])
def test_each_unrunnable_request_is_refused_naming_the_field_and_the_valid_values(
    fields: dict[str, object], field: str, valid: str
) -> None:
    [refusal] = refusals(seeds(**fields), RULES)
    assert refusal.field == field and valid in refusal.reason


def test_a_sync_request_naming_its_batch_and_target_is_admitted_without_a_template() -> None:
    event = admit(seeds(work_type="sync", num_games=None, params={"batch_id": "b1"}, target_node="gpu-1"), RULES,
                  work_id="w-1", requested_by="op")
    assert event == WorkAdded(work_id="w-1", work_type="sync", board_type="hex8", num_players=2, num_games=0,
                              params={"batch_id": "b1"}, target_node="gpu-1", requested_by="op")


def test_an_admitted_request_becomes_its_work_added_event_with_a_defaulted_count() -> None:
    rules = AdmissionRules(settings=AdmissionSettings(default_num_games={"selfplay": 250}))
    event = admit(seeds(num_games=None, priority=5, params={"x": 1}), rules, work_id="w-1", requested_by="op")
    assert event == WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, num_games=250,
                              priority=5, params={"x": 1}, requested_by="op")
    # A type whose template takes no count keeps 0; without a hosts file any target is accepted.
    training = admit(seeds(work_type="training", num_games=None, target_node="anywhere", params={"data": "a.npz"}),
                     AdmissionRules(), work_id="w-2", requested_by="op")
    assert isinstance(training, WorkAdded) and (training.num_games, training.target_node) == (0, "anywhere")


def test_the_configured_workload_decides_the_boards_types_and_counts() -> None:
    config = msgspec.convert({
        "admission": {"configs": ["chess_2p", "chess_4p"], "max_num_games": 10},
        "worker": {"templates": {"tournament": "play --board {board_type} --games {num_games}"}},
    }, RrConfig)
    rules = rules_for(config, None)
    assert refusals(seeds(work_type="tournament", board_type="chess", num_players=4, num_games=10), rules) == []
    assert [r.field for r in refusals(seeds(board_type="hex8"), rules)] == ["board_type", "num_games"]


def test_all_refusals_come_in_one_line_naming_the_first_field() -> None:
    with pytest.raises(InvalidWork) as caught:
        admitted(seeds(board_type="chess", priority=5000), RULES, requested_by="op")
    assert caught.value.field == "board_type" and "\n" not in str(caught.value) and "priority: 5000" in str(caught.value)


def test_decoding_errors_name_the_field() -> None:
    for body, field in ((b"", "body"), (b"{", "body"), (b'{"board_type": "hex8", "num_players": 2}', "work_type"),
                        (b'{"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "priority": 1e23}', "priority"),
                        (b'{"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "gpus": 1}', "gpus")):
        with pytest.raises(InvalidWork) as caught:
            decode_seeds(body)
        assert caught.value.field == field and field in str(caught.value), body


def test_bad_admission_settings_are_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text("admission: {configs: [hex8]}\n")
    with pytest.raises(InvalidConfig, match="admission: configs: 'hex8' is not <board>_<players>p"):
        load_config(path)
    path.write_text("admission: {min_priority: 5, max_priority: 1}\n")
    with pytest.raises(InvalidConfig, match="min_priority"):
        load_config(path)


# ---- both doors, on a real server -------------------------------------------------------------

REFUSED = [
    ({"board_type": "chess"}, "board_type"),
    ({"num_players": 4}, "num_players"),
    ({"work_type": "sync"}, "params.batch_id"),
    ({"work_type": "sync", "params": {"batch_id": "b1"}, "target_node": "ghost-node"}, "target_node"),
    ({"work_type": "tournament"}, "params.models"),
    ({"num_games": None}, "num_games"),
    ({"num_games": 0}, "num_games"),
    ({"priority": 10**23}, "priority"),
    ({"priority": 5000}, "priority"),
    ({"target_node": "ghost-node"}, "target_node"),
    ({"work_type": "training", "num_games": None}, "params.data"),
]


def request_json(fields: dict[str, object]) -> str:
    base: dict[str, object] = {"work_type": "selfplay", "board_type": "hex8", "num_players": 2, "num_games": 100}
    return json.dumps({k: v for k, v in (base | fields).items() if v is not None})


@pytest.fixture
def fleet_config(tmp_path: Path) -> tuple[Path, RrConfig]:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({"hosts": {"gpu-1": {"gpu": "H100 80GB"}, "cpu-1": {"role": "cpu_selfplay"}}}))
    path = tmp_path / "rr.yaml"
    path.write_text(yaml.safe_dump({"hosts_file": str(hosts)}))
    return path, load_config(path)


async def test_each_refused_request_is_refused_by_the_api_and_the_cli_and_appends_nothing(
    nats_url: str, fleet_config: tuple[Path, RrConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = fleet_config
    async with running_api(nats_url, config=config) as api:
        await wait_caught_up(api.base, 0)
        before = await last_sequence(api.bus)
        for fields, field in REFUSED:
            answer = await api.send("POST", "/work/add", request_json(fields).encode(), {"Content-Type": "application/json"})
            doc = answer.json()
            assert (answer.status, doc["success"], doc["field"]) == (400, False, field), (fields, doc)
            assert doc["error"].startswith(field), doc
            argv = ["work", "add", request_json(fields), "--nats", nats_url, "--node-id", "op", "--config", str(path)]
            assert await asyncio.to_thread(main, argv) == 2, fields
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"invalid work: {field}" in err, (fields, err)
        assert await last_sequence(api.bus) == before
        # The same doors still admit a runnable request.
        ok = await api.send("POST", "/work/add", request_json({"target_node": "gpu-1"}).encode())
        assert ok.status == 200
        argv = ["work", "add", request_json({"target_node": "cpu-1"}), "--nats", nats_url, "--node-id", "op", "--config", str(path)]
        assert await asyncio.to_thread(main, argv) == 0
        assert await last_sequence(api.bus) == before + 2


def test_a_cli_without_a_reachable_server_refuses_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    # Validation needs no server: a refused request never dials NATS (the URL here would fail).
    argv = ["work", "add", request_json({"board_type": "chess"}), "--nats", "nats://127.0.0.1:1", "--node-id", "op"]
    assert main(argv) == 2
    assert "board_type: unknown board 'chess'" in capsys.readouterr().err
