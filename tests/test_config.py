"""The config file: validated once at load; every mistake is one line naming the file and the key."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from config.settings import RrConfig, load_config, load_yaml_as
from eventbus.errors import InvalidConfig
from eventbus.streams import StreamSettings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rr.yaml"
    path.write_text(text)
    return path


def test_no_path_means_every_default() -> None:
    assert load_config(None) == RrConfig()


def test_an_empty_file_means_every_default(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing set\n")) == RrConfig()


def test_a_valid_file_sets_what_it_names_and_defaults_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "streams:\n  replicas: 3\n  storage: memory\n  telemetry_per_node: 60\nhosts_file: /etc/rr/hosts.yaml\n")
    config = load_config(str(path))
    assert config.streams == StreamSettings(replicas=3, storage="memory", telemetry_per_node=60)
    assert config.hosts_file == "/etc/rr/hosts.yaml"


def test_the_snapshot_buckets_byte_budget_is_set_in_gib(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "snapshots:\n  max_gib: 0.5\n")).snapshots.max_gib == 0.5
    assert load_config(None).snapshots.max_gib == 4.0


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("streams:\n  replicas: three\n", "streams.replicas", "Expected `int`, got `str`"),
        ("streams:\n  storage: ssd\n", "streams.storage", "'ssd'"),
        ("streams: 5\n", "streams", "Expected `object`"),
        ("- a\n- b\n", "(top level)", "Expected `object`"),
        ("snapshots:\n  max_gib: 0\n", "snapshots.max_gib", "Expected `float` > 0"),
        ("snapshots:\n  max_gib: lots\n", "snapshots.max_gib", "Expected `float`, got `str`"),
    ],
)
def test_a_wrong_type_names_file_and_key_path(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InvalidConfig) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {where}: "), message
    assert what in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "where", "key"),
    [("bogus: 1\n", "(top level)", "bogus"), ("streams:\n  replicass: 3\n", "streams", "replicass")],
)
def test_an_unknown_key_is_refused_by_name(tmp_path: Path, text: str, where: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InvalidConfig, match=re.escape(f"{path}: {where}: Object contains unknown field `{key}`")):
        load_config(path)


@pytest.mark.parametrize(("text", "line"), [("streams: [\n  a: b\n", 3), ("streams:\n\treplicas: 3\n", 2)])
def test_bad_yaml_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InvalidConfig, match=re.escape(f"{path} (line {line}): not valid YAML")):
        load_config(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InvalidConfig, match=re.escape(f"{missing}: cannot read config: No such file")):
        load_config(missing)
    with pytest.raises(InvalidConfig, match="cannot read config"):
        load_config(tmp_path)  # a directory


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    interval_s: float = 5.0
    nodes: list[str] = []


def test_load_yaml_as_serves_any_section_struct(tmp_path: Path) -> None:
    assert load_yaml_as(write(tmp_path, "interval_s: 2\nnodes: [a, b]\n"), _Section) == _Section(interval_s=2.0, nodes=["a", "b"])
    with pytest.raises(InvalidConfig, match=re.escape("nodes[1]: Expected `str`")):
        load_yaml_as(write(tmp_path, "nodes: [a, [b]]\n"), _Section)
