"""Where received batches live on a node, pure: <data dir>/sync/<config>/<batch><suffix of the original>.

A training job on a node that did not write a batch finds the node's copy with
`received_path` (the origin's path in SELFPLAY_COMPLETE names a file on the origin).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from config.nodedirs import config_name, node_dirs
from config.settings import RrConfig
from eventbus.subjects import token
from projections.data import Batch

DEFAULT_SUFFIX = ".bin"


def sync_data_dir(config: RrConfig, env: Mapping[str, str], home: Path) -> Path:
    """`sync.data_dir`, else the node's data dir: the data dir the sync service writes under (and locks)."""
    return node_dirs(config, env, home).sync_data_dir


def sync_root(config: RrConfig, env: Mapping[str, str], home: Path) -> Path:
    """Where batches copied to this node land (config/nodedirs.py)."""
    return node_dirs(config, env, home).sync_dir


def received_path(root: Path, board_type: str, num_players: int, batch_id: str, origin_path: str = "") -> Path:
    """Where this node keeps its copy of a batch (the origin file's suffix kept, e.g. .npz)."""
    suffix = Path(origin_path).suffix if origin_path else ""
    suffix = suffix if 1 < len(suffix) <= 16 else DEFAULT_SUFFIX
    return root / config_name(board_type, num_players) / f"{token(batch_id)}{suffix}"


def batch_path(root: Path, batch: Batch, origin_path: str = "") -> Path:
    """`received_path` of a folded batch."""
    return received_path(root, batch.board_type, batch.num_players, batch.batch_id, origin_path)
