"""Every config mistake is one line naming the file and the key: encoding, non-finite numbers, depth, duplicates, alias bombs, long ids."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from config.hosts import load_hosts
from config.settings import load_config
from config.yamlfile import MAX_DEPTH, MAX_NODES
from eventbus.errors import InvalidConfig
from eventbus.limits import ID_MAX, id_problem
from servicekit.auth.permissions import NODE_CONSUMER_SERVICES, node_consumer
from servicekit.options import add_common_arguments, common_options

ALIAS_BOMB = """hosts:
  gpu-1:
    labels:
      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
      b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
      c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
      d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
      e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
      f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
      g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


def _refusal(loader: object, tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "file.yaml"
    path.write_bytes(content)
    with pytest.raises(InvalidConfig) as refused:
        loader(path)  # type: ignore[operator]
    message = str(refused.value)
    assert message.startswith(f"{path}"), message
    assert "\n" not in message and len(message) < 400, message
    return message


@pytest.mark.parametrize("loader", [load_config, load_hosts], ids=["config", "hosts"])
def test_non_utf8_is_one_line(loader: object, tmp_path: Path) -> None:
    assert "not UTF-8" in _refusal(loader, tmp_path, b"hosts:\n  gpu-\xff: {}\n")


def test_non_finite_numbers_name_their_key(tmp_path: Path) -> None:
    assert _refusal(load_config, tmp_path, b"leadership:\n  ttl_s: .inf\n").endswith("leadership.ttl_s: inf is not a finite number")
    assert "membership.heartbeat_interval_s: nan" in _refusal(load_config, tmp_path, b"membership:\n  heartbeat_interval_s: .nan\n")
    assert "hosts.gpu-1.memory_gb: -inf" in _refusal(load_hosts, tmp_path, b"hosts:\n  gpu-1:\n    memory_gb: -.inf\n")


# Past Python's recursion limit whatever the stack already holds, were PyYAML's composer (two frames a level) let
# recurse that deep. More levels only cost time without libyaml: the pure scanner is quadratic in the flow depth.
PAST_THE_RECURSION_LIMIT = 1000


@pytest.mark.parametrize("loader", [load_config, load_hosts], ids=["config", "hosts"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, PAST_THE_RECURSION_LIMIT])
def test_deep_nesting_is_one_line(loader: object, tmp_path: Path, depth: int) -> None:
    assert "nested" in _refusal(loader, tmp_path, b"hosts: " + b"[" * depth + b"]" * depth + b"\n")


def test_a_duplicate_top_level_key_in_the_config_is_refused(tmp_path: Path) -> None:
    message = _refusal(load_config, tmp_path, b"api:\n  port: 9000\nleadership: {}\napi:\n  port: 9001\n")
    assert "duplicate key `api`" in message and "(line 4)" in message


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    message = _refusal(load_hosts, tmp_path, ALIAS_BOMB.encode())
    assert f"expands to more than {MAX_NODES} values" in message and "hosts.gpu-1.labels" in message


def test_a_large_honest_hosts_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text("hosts:\n" + "".join(f"  node-{i:05d}:\n    cpus: 8\n    gpu: RTX 4090 24GB\n" for i in range(8000)))
    assert len(load_hosts(path).hosts) == 8000


def test_a_host_name_over_the_id_limit_is_refused(tmp_path: Path) -> None:
    message = _refusal(load_hosts, tmp_path, f"hosts:\n  {'n' * 250}:\n    cpus: 8\n".encode())
    assert f"at most {ID_MAX} are allowed" in message


def test_a_node_id_over_the_limit_is_refused_on_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    with pytest.raises(SystemExit, match=f"at most {ID_MAX} are allowed"):
        common_options(parser.parse_args(["--node-id", "n" * 250]))
    assert common_options(parser.parse_args(["--node-id", "n" * ID_MAX])).node_id == "n" * ID_MAX


def test_the_id_limit_fits_every_name_derived_from_a_node_id() -> None:
    longest = "n" * ID_MAX
    assert id_problem(longest) is None and id_problem(longest + "n") is not None
    # JetStream refuses consumer names over 255 characters; the longest prefix added is a service name.
    assert all(len(node_consumer(service, longest)) <= 255 for service in NODE_CONSUMER_SERVICES)


def test_a_leadership_candidate_over_the_id_limit_is_refused_naming_the_key(tmp_path: Path) -> None:
    message = _refusal(load_config, tmp_path, f"leadership:\n  candidates: [{'n' * 200}]\n".encode())
    assert f"leadership.candidates[0]: Expected `str` of length <= {ID_MAX}" in message
