"""Loading a large hosts file: `load_hosts` against libyaml's bare load of the same text (its ceiling).

Three sides per round, order rotated round by round: "raw" is `yaml.load(text, yaml.CSafeLoader)`
alone (no duplicate-key refusal, shape checks or conversion), "ours" is `load_hosts` as shipped,
"pure" is `load_hosts` as on a machine whose PyYAML lacks libyaml (config.yamlfile.FAST_LOADER None:
the pure-Python scanner, as before libyaml was used). No NATS: the file is all there is.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

import config.yamlfile
from config.hosts import load_hosts
from ops.bench.common import emit, log


def hosts_text(hosts: int) -> str:
    """The hosts file of tests/test_config_strict.py's large honest load, at any size."""
    return "hosts:\n" + "".join(f"  node-{i:05d}:\n    cpus: 8\n    gpu: RTX 4090 24GB\n" for i in range(hosts))


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _load_pure(path: Path) -> object:
    fast, config.yamlfile.FAST_LOADER = config.yamlfile.FAST_LOADER, None
    try:
        return load_hosts(path)
    finally:
        config.yamlfile.FAST_LOADER = fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8000, help="hosts in the file")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (rotating order)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-config-") as tmp:
        path = Path(tmp) / "hosts.yaml"
        path.write_text(hosts_text(args.hosts))
        sides: dict[str, Callable[[], object]] = {
            "raw": lambda: yaml.load(path.read_text(), Loader=yaml.CSafeLoader),  # noqa: S506 - the safe C loader
            "ours": lambda: load_hosts(path),
            "pure": lambda: _load_pure(path),
        }
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        names = list(sides)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                seconds[name].append(_timed(sides[name]))
                log(f"round {r + 1}/{args.rounds} {name}: {seconds[name][-1]:.3f} s")
    median = {name: statistics.median(times) for name, times in seconds.items()}
    emit({"bench": "config_load", "hosts": args.hosts, "rounds": args.rounds,
          "raw_s": round(median["raw"], 3), "ours_s": round(median["ours"], 3), "pure_s": round(median["pure"], 3),
          "ratio": round(median["raw"] / median["ours"], 3), "pure_ratio": round(median["raw"] / median["pure"], 3),
          "rounds_s": {name: [round(t, 3) for t in times] for name, times in seconds.items()},
          "libyaml": yaml.__with_libyaml__, "goal": 0.5})


if __name__ == "__main__":
    main()
