"""Where models live on a node, pure: the seeds' names, the kept versions, the downloads in progress.

    <models_dir>/canonical_<board>_<n>p.pth       the config's current model (a hard link to its version)
    <models_dir>/ringrift_best_<board>_<n>p.pth   symlink -> canonical_<board>_<n>p.pth (what jobs open)
    <models_dir>/versions/<board>_<n>p/<model>.pth every verified model kept by the retention policy
    <models_dir>/.incoming/<model>.part            a download or copy before it is verified
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from config.nodedirs import config_name, node_dirs
from config.settings import RrConfig
from eventbus.subjects import token

VERSIONS = "versions"
INCOMING = ".incoming"
SUFFIX = ".pth"


def data_dir(config: RrConfig, env: Mapping[str, str], home: Path) -> Path:
    """The node's data dir (config/nodedirs.py)."""
    return node_dirs(config, env, home).data_dir


def models_dir(config: RrConfig, env: Mapping[str, str], home: Path) -> Path:
    """Where this node's models are installed and read (config/nodedirs.py)."""
    return node_dirs(config, env, home).models_dir


def canonical_path(root: Path, board_type: str, num_players: int) -> Path:
    """<models_dir>/canonical_<board>_<n>p.pth."""
    return root / f"canonical_{config_name(board_type, num_players)}{SUFFIX}"


def best_link_path(root: Path, board_type: str, num_players: int) -> Path:
    """<models_dir>/ringrift_best_<board>_<n>p.pth, the name the worker's jobs read."""
    return root / f"ringrift_best_{config_name(board_type, num_players)}{SUFFIX}"


def version_stem(model_id: str) -> str:
    """A model id as a file name."""
    return token(model_id)


def version_path(root: Path, board_type: str, num_players: int, model_id: str) -> Path:
    """<models_dir>/versions/<board>_<n>p/<model>.pth."""
    return root / VERSIONS / config_name(board_type, num_players) / f"{version_stem(model_id)}{SUFFIX}"


