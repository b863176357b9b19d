"""libyaml's C parser and the pure-Python one read every config file alike: same data, same refusal (file, line, key, text).

A machine whose PyYAML lacks libyaml falls back to the pure loader (FAST_LOADER None); these tests are that machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import config.yamlfile
from config.hosts import load_hosts
from config.yamlfile import MAX_DEPTH, read_yaml
from eventbus.errors import InvalidConfig

GOOD = {
    "hosts": "hosts:\n  gpu-1:\n    cpus: 8\n    gpu: RTX 4090 24GB\n    labels: {zone: a, tier: [1, 2]}\n  cpu-2: {}\n"
             "p2p_voters: [gpu-1]\n",
    "anchors": "base: &b {cpus: 4, memory_gb: 16.5}\nhosts:\n  a: *b\n  b: [*b, *b]\n",
    "scalars": "a: yes\nb: 0x1f\nc: 1_000\nd: 2026-12-07\ne: ~\nf: '007'\ng: |\n  two\n  lines\n",
    "empty": "",
    "comment only": "# nothing here\n",
}
# Each bad file: (text, what the refusal must contain): the line and/or the key it names.
BAD = {
    "duplicate key": ("hosts:\n  gpu-1: {cpus: 4}\n  gpu-2: {}\n  gpu-1: {cpus: 8}\n", "(line 4): not valid YAML: duplicate key `gpu-1`"),
    "bad indentation": ("hosts:\n  gpu-1:\n    cpus: 4\n   role: mixed\n", "(line 4): not valid YAML: "),
    "tab": ("streams:\n\treplicas: 3\n", "(line 2): not valid YAML: found character '\\t'"),
    "unclosed flow": ("streams: [\n  a: b\n", "(line 3): not valid YAML: "),
    "unknown tag": ("hosts:\n  gpu-1: !gpu {cpus: 4}\n", "(line 2): not valid YAML: could not determine a constructor for the tag '!gpu'"),
    "python tag": ("a: !!python/object/apply:os.system ['true']\n", "(line 1): not valid YAML: could not determine a constructor"),
    "undefined alias": ("a: *nope\n", "(line 1): not valid YAML: found undefined alias 'nope'"),
    "control character": ("a: \x01\n", "not valid YAML: unacceptable character #x0001"),
    "two documents": ("a: 1\n---\nb: 2\n", "(line 2): not valid YAML: but found another document"),
    "deep nesting": ("hosts: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", "hosts" + "[0]" * (MAX_DEPTH - 1) + ": nested more"),
    # Past the pure composer's recursion limit (2 frames a level) but within libyaml's: the same key either way.
    "deep nesting past Python's recursion limit": ("hosts: " + "[" * 600 + "]" * 600 + "\n", "hosts" + "[0]" * (MAX_DEPTH - 1) + ": nested more"),
    "deep block nesting": ("".join(" " * i + f"k{i}:\n" for i in range(700)), ".".join(f"k{i}" for i in range(MAX_DEPTH)) + ": nested more"),
    "an anchor below the depth limit": ("a: " + "[" * 40 + "&x 1" + "]" * 40 + "\nb: *x\n", "a" + "[0]" * (MAX_DEPTH - 1) + ": nested more"),
    "deeper than libyaml's limit": ("hosts: " + "[" * 1000 + "]" * 1000 + "\n", f"nested too deeply (more than {MAX_DEPTH} levels)"),
    "duplicate key in a flow mapping": ("a: &x {k: 1}\nb: {k: 1, k: 2}\n", "(line 2): not valid YAML: duplicate key `k`"),
}


def _read_with_each_loader(path: Path, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """read_yaml's data or refusal text with the C parser, then as on a machine without libyaml."""
    results: list[object] = []
    for fast in (config.yamlfile.FAST_LOADER, None):
        monkeypatch.setattr(config.yamlfile, "FAST_LOADER", fast)
        try:
            results.append(read_yaml(path, "config"))
        except InvalidConfig as refused:
            results.append(str(refused))
    return results


def test_pyyaml_is_built_with_libyaml() -> None:
    # The manylinux wheels bundle it; without it every file falls back to the pure scanner (~1 ms a host).
    assert yaml.__with_libyaml__ and config.yamlfile.FAST_LOADER is not None


@pytest.mark.parametrize("name", sorted(GOOD))
def test_both_loaders_read_a_good_file_alike(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "file.yaml"
    path.write_text(GOOD[name])
    fast, pure = _read_with_each_loader(path, monkeypatch)
    assert fast == pure == (yaml.safe_load(GOOD[name]) or {})


@pytest.mark.parametrize("name", sorted(BAD))
def test_both_loaders_refuse_a_bad_file_alike(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, expected = BAD[name]
    path = tmp_path / "file.yaml"
    path.write_text(text)
    fast, pure = _read_with_each_loader(path, monkeypatch)
    assert fast == pure, (fast, pure)
    assert isinstance(fast, str) and fast.startswith(f"{path}") and expected in fast, fast


class _PureLoaderConsulted:
    def __init__(self, text: str) -> None:
        raise AssertionError("the pure loader re-read the file")


def test_past_libyamls_nesting_limit_the_pure_loader_is_not_consulted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Re-reading costs ~1.3 s at 1000 levels: the pure scanner is quadratic in flow depth up to its recursion limit.
    path = tmp_path / "hosts.yaml"
    path.write_text("hosts: " + "[" * 200_000 + "]" * 200_000 + "\n")
    monkeypatch.setattr(config.yamlfile, "_StrictLoader", _PureLoaderConsulted)
    with pytest.raises(InvalidConfig, match=r"nested too deeply \(more than 32 levels\)"):
        load_hosts(path)
