"""One place resolves a node's directories: the distributor installs where the worker looks."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from config.nodedirs import best_link_path, canonical_path, models_dir, node_dirs, sync_root, version_path
from config.sections.distribution import DistributionSettings
from config.sections.sync import SyncSettings
from config.sections.worker import WorkerSettings
from config.settings import RrConfig
from eventbus.errors import InvalidConfig
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext
from services.worker.outputs import best_model
from services.worker.service import worker_paths

HOME = Path("/home/op")


def test_only_distribution_models_dir_set_reaches_the_worker_too(tmp_path: Path) -> None:
    config = RrConfig(distribution=DistributionSettings(models_dir=str(tmp_path / "m")))
    env = {"RR_DATA_DIR": str(tmp_path / "d")}
    assert models_dir(config, env, HOME) == tmp_path / "m"
    assert worker_paths(config, "gpu-7", env, HOME).models_dir == tmp_path / "m"


def test_worker_models_dir_is_where_the_distributor_installs(tmp_path: Path) -> None:
    config = RrConfig(worker=WorkerSettings(models_dir=str(tmp_path / "wm")))
    assert models_dir(config, {}, HOME) == worker_paths(config, "n", {}, HOME).models_dir == tmp_path / "wm"


def test_two_different_models_dirs_are_refused_naming_both_keys(tmp_path: Path) -> None:
    config = RrConfig(worker=WorkerSettings(models_dir=str(tmp_path / "a")),
                      distribution=DistributionSettings(models_dir=str(tmp_path / "b")))
    with pytest.raises(InvalidConfig, match=r"distribution\.models_dir .* worker\.models_dir .* differ"):
        node_dirs(config, {}, HOME)
    same = RrConfig(worker=WorkerSettings(models_dir=str(tmp_path / "a")),
                    distribution=DistributionSettings(models_dir=str(tmp_path / "a")))
    assert node_dirs(same, {}, HOME).models_dir == tmp_path / "a"


def test_defaults_follow_the_data_dir_for_every_service(tmp_path: Path) -> None:
    env = {"RR_DATA_DIR": str(tmp_path / "data")}
    config = RrConfig()
    paths = worker_paths(config, "w-1", env, HOME)
    assert paths.models_dir == models_dir(config, env, HOME) == tmp_path / "data" / "models"
    assert paths.received_dir == sync_root(config, env, HOME) == tmp_path / "data" / "sync"
    assert paths.worker_dir == tmp_path / "data" / "worker" / "w-1"


def test_worker_data_dir_wins_over_the_environment_and_sync_data_dir_moves_only_batches(tmp_path: Path) -> None:
    config = RrConfig(worker=WorkerSettings(data_dir=str(tmp_path / "w")), sync=SyncSettings(data_dir=str(tmp_path / "s")))
    dirs = node_dirs(config, {"RR_DATA_DIR": str(tmp_path / "env")}, HOME)
    assert (dirs.data_dir, dirs.models_dir, dirs.sync_dir) == (tmp_path / "w", tmp_path / "w" / "models", tmp_path / "s" / "sync")
    assert worker_paths(config, "n", {}, HOME).received_dir == tmp_path / "s" / "sync"


def test_the_worker_plays_the_version_the_distributor_laid_out(tmp_path: Path) -> None:
    root = tmp_path / "models"
    version = version_path(root, "hex8", 2, "hex8_2p-abc")
    version.parent.mkdir(parents=True)
    version.write_bytes(b"weights")
    os.link(version, canonical_path(root, "hex8", 2))
    best_link_path(root, "hex8", 2).symlink_to(canonical_path(root, "hex8", 2).name)
    best = best_model(root, "hex8", 2)
    assert best is not None and (best.path, best.model_id) == (version, "hex8_2p-abc")
    assert best_model(root, "square8", 2) is None


PACKAGES = ("eventbus", "projections", "config", "servicekit", "cluster", "workload", "services", "cli")
# File names of the node's disk that only config/nodedirs.py may spell: two spellings drift apart.
LAYOUT_NAMES = re.compile(r"(^|/)(canonical_|ringrift_best_|\.incoming$|\.incoming/|versions$|versions/|running-jobs\.json)")


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals (f-string parts included), leaving out docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_only_the_layout_module_spells_the_node_file_names() -> None:
    root = Path(__file__).resolve().parent.parent
    layout = root / "config" / "nodedirs.py"
    found = [
        f"{path.relative_to(root)}:{line}: {text!r}"
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
        if path != layout
        for line, text in _strings(ast.parse(path.read_text()))
        if LAYOUT_NAMES.search(text)
    ]
    assert not found, f"name these files through config/nodedirs.py's functions: {found}"


def test_a_service_gets_its_directories_from_its_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RR_DATA_DIR", str(tmp_path / "env"))
    config = RrConfig(sync=SyncSettings(data_dir=str(tmp_path / "s")))
    ctx = ServiceContext("sync", None, config, CommonOptions(nats_url=None, node_id="n-1", config_path=None))
    assert ctx.dirs == node_dirs(config, {"RR_DATA_DIR": str(tmp_path / "env")}, HOME)
    assert (ctx.dirs.models_dir, ctx.dirs.sync_dir) == (tmp_path / "env" / "models", tmp_path / "s" / "sync")
    bad = RrConfig(worker=WorkerSettings(models_dir="/a"), distribution=DistributionSettings(models_dir="/b"))
    refused = ServiceContext("leader", None, bad, CommonOptions(nats_url=None, node_id="n-1", config_path=None))
    with pytest.raises(InvalidConfig):  # on first use: a service that needs no directory still starts
        _ = refused.dirs
