"""The hosts file (config/hosts.py): every kind of mistake is one message naming file, key path and what is wrong."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from config.hosts import HostEntry, load_hosts
from eventbus.errors import InvalidConfig

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "distributed_hosts.example.yaml"


def write(tmp_path: Path, text: str | bytes, name: str = "hosts.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def refused(path: Path) -> str:
    with pytest.raises(InvalidConfig) as caught:
        load_hosts(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message  # every message names the file first
    return message


def test_the_example_file_loads_cleanly_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="config.hosts"):
        hosts = load_hosts(EXAMPLE)
    assert caplog.records == []
    assert hosts.p2p_voters == ["nebius-backbone-1", "nebius-h100-3", "hetzner-cpu1"]
    assert hosts.hosts["nebius-h100-3"].vram_gb() == 80.0
    assert hosts.hosts["runpod-a100-1"].all_roles() == ["nn_training", "evaluation"]
    assert hosts.hosts["vultr-a100-20gb-2"].status == "disabled"
    assert hosts.hosts["vast-rtx5090-1"].ephemeral and hosts.hosts["hetzner-cpu1"].gpu == ""


def test_seeds_keys_rr_does_not_use_are_accepted_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "hosts:\n  gpu-1:\n    ssh_host: 10.0.0.1\n    ssh_port: 22\n    venv_activate: source x\n    cpus: 8\n")
    with caplog.at_level(logging.WARNING, logger="config.hosts"):
        assert load_hosts(path).hosts["gpu-1"] == HostEntry(cpus=8)
    assert caplog.records == []


def test_unknown_keys_are_refused_in_one_line_naming_them(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts:\n  gpu-1:\n    cpu: 8\n    max_paralel_jobs: 4\nvotres: [gpu-1]\n")
    with pytest.raises(InvalidConfig) as refused:
        load_hosts(path)
    assert str(refused.value) == (f"{path}: votres: unknown key (and 2 more: hosts.gpu-1.cpu: unknown key, "
                                  "hosts.gpu-1.max_paralel_jobs: unknown key); fix the spelling or remove it")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hosts:\n  gpu-1: {cpus: many}\n", "hosts.gpu-1.cpus: Expected `int | null`, got `str`"),
        ("hosts:\n  gpu-1: {memory_gb: [64]}\n", "hosts.gpu-1.memory_gb: Expected `float | null`, got `array`"),
        ("hosts:\n  gpu-1: {gpu: 4090}\n", "hosts.gpu-1.gpu: Expected `str`, got `int`"),
        ("hosts:\n  gpu-1: {ephemeral: sometimes}\n", "hosts.gpu-1.ephemeral: Expected `bool`, got `str`"),
        ("hosts:\n  gpu-1: {max_parallel_jobs: -1}\n", "hosts.gpu-1.max_parallel_jobs: Expected `int` >= 0"),
        ("hosts:\n  gpu-1: {cpus: 0}\n", "hosts.gpu-1.cpus: Expected `int` >= 1"),
        ("hosts:\n  gpu-1: {}\np2p_voters: gpu-1\n", "p2p_voters: Expected `array`, got `str`"),
        ("hosts:\n  - gpu-1\n", "hosts: must be a mapping of host name to its settings, got list"),
        ("hosts:\n  123: {}\n", "hosts.123: a host name must be a string"),
        ("- just\n- a list\n", "top level must be a mapping with `hosts:`, got list"),
    ],
    ids=["str-for-int", "list-for-float", "int-for-str", "str-for-bool", "negative-jobs", "zero-cpus",
         "voters-not-a-list", "hosts-a-list", "int-host-name", "top-level-list"],
)
def test_a_wrong_type_names_the_key_path_and_the_expected_type(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert refused(path).startswith(f"{path}: {expected}")


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("hosts:\n  gpu-1: {status: broken}\n", "hosts.gpu-1.status", "'broken' (one of: ready, disabled, maintenance)"),
        ("hosts:\n  gpu-1: {role: trainer}\n", "hosts.gpu-1.role", "'trainer' (one of: coordinator, selfplay,"),
        ("hosts:\n  gpu-1: {roles: [selfplay, bogus]}\n", "hosts.gpu-1.roles[1]", "'bogus' (one of: coordinator,"),
    ],
    ids=["status", "role", "roles"],
)
def test_a_bad_enum_value_lists_the_allowed_values(tmp_path: Path, text: str, key: str, value: str) -> None:
    message = refused(write(tmp_path, text))
    assert f": {key}: Invalid enum value {value}" in message


def test_a_voter_that_is_not_a_host_is_refused(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "hosts:\n  gpu-1: {}\n  gpu-2: {}\np2p_voters: [gpu-1, gpu-9, cpu-3]\n"))
    assert message.endswith("p2p_voters: gpu-9, cpu-3 not listed under hosts")
    assert refused(write(tmp_path, "hosts: {}\np2p_voters: [gpu-1]\n")).endswith("p2p_voters: gpu-1 not listed under hosts")


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "hosts:\n  gpu-1:\n    cpus: 4\n   role: mixed\n"))
    assert re.match(rf"{re.escape(str(tmp_path / 'hosts.yaml'))} \(line 4\): not valid YAML: ", message), message


def test_a_host_given_twice_is_refused_instead_of_silently_dropped(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "hosts:\n  gpu-1: {cpus: 4}\n  gpu-2: {}\n  gpu-1: {cpus: 8}\n"))
    assert "(line 4): not valid YAML: duplicate key `gpu-1`" in message


@pytest.mark.parametrize("case", ["missing", "directory", "binary"])
def test_an_unreadable_file_says_why(tmp_path: Path, case: str) -> None:
    if case == "missing":
        path, why = tmp_path / "nope.yaml", "cannot read hosts file: No such file or directory"
    elif case == "directory":
        path, why = tmp_path, "cannot read hosts file: Is a directory"
    else:
        path, why = write(tmp_path, b"\xff\xfe\x00\x01binary"), "not UTF-8 text (byte 0)"
    assert refused(path).startswith(f"{path}: {why}")


def test_an_empty_file_is_an_empty_fleet(tmp_path: Path) -> None:
    hosts = load_hosts(write(tmp_path, "# nothing yet\n"))
    assert hosts.hosts == {} and hosts.p2p_voters == []


def test_voters_may_be_spelled_voters(tmp_path: Path) -> None:
    assert load_hosts(write(tmp_path, "hosts:\n  a: {}\nvoters: [a]\n")).p2p_voters == ["a"]


def test_gpu_memory_comes_from_the_name_unless_given() -> None:
    assert HostEntry(gpu="RTX 5090 32GB").vram_gb() == 32.0
    assert HostEntry(gpu="A100 PCIe", gpu_memory_gb=80).vram_gb() == 80.0
    assert HostEntry().vram_gb() == 0.0
