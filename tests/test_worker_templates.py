"""Command templates: expansion into an argv, and errors that name the template key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.sections.templates import DEFAULT_TEMPLATES, TemplateError, placeholders
from config.sections.worker import WorkerSettings
from config.settings import load_config
from eventbus.errors import InvalidConfig
from eventbus.events import WorkAdded
from servicekit.templates import WorkerValues, expand, template_values

ITEM = WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, num_games=20,
                 params={"sims": 8, "note": "two words", "fast": True})
WORKER = WorkerValues(python="/usr/bin/python3", output_dir="/data/worker/n1/jobs/w-1/a1/out",
                      model_path="none", best_model_id="none", work_id="w-1", attempt=1, node="n1")


def values(item: WorkAdded = ITEM) -> dict[str, str]:
    return template_values(item, WORKER)


def test_the_default_selfplay_template_runs_the_reference_workload_with_the_item_and_worker_values() -> None:
    assert expand("selfplay", DEFAULT_TEMPLATES["selfplay"], values()) == [
        "/usr/bin/python3", "-m", "workload.selfplay", "--board", "hex8", "--num-players", "2",
        "--num-games", "20", "--model", "none", "--out", "/data/worker/n1/jobs/w-1/a1/out",
    ]


def test_params_fill_placeholders_and_a_value_with_spaces_stays_one_argument() -> None:
    argv = expand("selfplay", "run --sims {sims} --note {note} --fast={fast} 'a b' {{literal}}", values())
    assert argv == ["run", "--sims", "8", "--note", "two words", "--fast=true", "a b", "{literal}"]


def test_a_starred_placeholder_becomes_one_argument_per_comma_separated_part() -> None:
    item = WorkAdded(work_id="w-2", work_type="training", board_type="hex8", num_players=2,
                     params={"data": "/d/a.npz, /d/b.npz,"})
    assert expand("training", "train --data {data*} --out x", values(item)) == ["train", "--data", "/d/a.npz", "/d/b.npz", "--out", "x"]


def test_worker_values_win_over_params_of_the_same_name() -> None:
    item = WorkAdded(work_id="w-3", work_type="selfplay", board_type="hex8", num_players=2, params={"output_dir": "/etc"})
    assert values(item)["output_dir"] == WORKER.output_dir


def test_an_unknown_placeholder_is_named_with_the_template_key_and_what_is_known() -> None:
    with pytest.raises(TemplateError) as err:
        expand("selfplay", "run --sims {simulations}", values())
    message = str(err.value)
    assert message.startswith("worker.templates.selfplay: unknown placeholder {simulations}")
    assert "known: " in message and "board_type" in message and "sims" in message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("run --games {num_games", "worker.templates.evaluation: unbalanced braces in '{num_games'"),
        ("run --games num_games}", "worker.templates.evaluation: unbalanced braces in 'num_games}'"),
        ("run '--games {num_games}", "worker.templates.evaluation: No closing quotation"),
        ("run {}", "worker.templates.evaluation: bad placeholder {}"),
        ("run {item.board}", "worker.templates.evaluation: bad placeholder {item.board}"),
        ("run {num_games:04d}", "worker.templates.evaluation: placeholder {num_games} takes no format spec"),
        ("run --data={data*}", "worker.templates.evaluation: {data*} must be a whole argument"),
        ("   ", "worker.templates.evaluation: empty command"),
    ],
)
def test_malformed_templates_are_refused_naming_the_key_and_the_problem(template: str, expected: str) -> None:
    with pytest.raises(TemplateError) as err:
        placeholders("evaluation", template)
    assert str(err.value).startswith(expected), str(err.value)


def test_a_malformed_template_in_the_config_file_fails_at_load_naming_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text("worker:\n  templates:\n    selfplay: '{python} -m x --games {num_games'\n")
    with pytest.raises(InvalidConfig) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: worker: templates.selfplay: unbalanced braces"), str(err.value)


def test_configured_templates_and_timeouts_are_merged_over_the_defaults() -> None:
    settings = WorkerSettings(templates={"selfplay": "true"}, timeouts_s={"training": 5.0})
    assert settings.template_for("selfplay") == "true"
    assert settings.template_for("evaluation") == DEFAULT_TEMPLATES["evaluation"]
    assert settings.template_for("sync") is None
    assert (settings.timeout_for("training"), settings.timeout_for("selfplay"), settings.timeout_for("other")) == (5.0, 3600.0, 3600.0)


def test_every_default_template_is_well_formed() -> None:
    for key, template in DEFAULT_TEMPLATES.items():
        assert {"python", "board_type", "num_players", "model_path"} <= set(placeholders(key, template))
