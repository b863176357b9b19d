"""A node's disk layout, in one place (pure): every directory its services use, and the files in them.

The worker, the distributor and the sync service must agree on where models and received
batches live: a model installed where the worker does not look is never used. Each of them
asks `node_dirs` for the directories and the functions below for the files, and nothing else.

    data dir      worker.data_dir, else RR_DATA_DIR, else $XDG_DATA_HOME/rr, else ~/.local/share/rr
    models        distribution.models_dir or worker.models_dir (set both only to the same path), else <data dir>/models
    sync          <sync.data_dir or data dir>/sync   batches copied here from other nodes
    worker        <data dir>/worker/<node>          job records, attempts, fetched candidates, running-jobs.json

In the models dir:

    canonical_<board>_<n>p.pth        the config's current model (a hard link to its version)
    ringrift_best_<board>_<n>p.pth    symlink -> canonical_<board>_<n>p.pth (the seeds' name: what jobs open)
    versions/<board>_<n>p/<model>.pth every verified model kept by the retention policy
    .incoming/<model>.part            a download or copy before it is verified

In the sync dir: <board>_<n>p/<batch><suffix of the original>, a batch another node wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from config.settings import RrConfig
from eventbus.errors import InvalidConfig
from eventbus.subjects import token
from projections.data import Batch

VERSIONS = "versions"
INCOMING = ".incoming"
SUFFIX = ".pth"  # of every model file
DEFAULT_SUFFIX = ".bin"  # of a received batch whose original named none
JOBS_FILE = "running-jobs.json"


def default_data_dir(env: Mapping[str, str], home: Path) -> Path:
    """RR_DATA_DIR, else $XDG_DATA_HOME/rr, else ~/.local/share/rr."""
    if env.get("RR_DATA_DIR"):
        return Path(env["RR_DATA_DIR"]).expanduser()
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]).expanduser() / "rr"
    return home / ".local" / "share" / "rr"


def measured_disk(disk_path: str | None, env: Mapping[str, str], home: Path) -> str:
    """The directory whose disk a heartbeat (or the API's storage check) reports: `disk_path`, else the data dir.

    Its nearest existing parent, so a data dir not made yet still names its disk (the one read of the filesystem here).
    """
    path = Path(disk_path) if disk_path else default_data_dir(env, home)
    path = path.expanduser().absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return str(path)


def config_name(board_type: str, num_players: int) -> str:
    """The config part of the seeds' file and folder names (models and received batches), e.g. hex8_2p."""
    return f"{token(board_type)}_{num_players}p"


class NodeDirs(msgspec.Struct, frozen=True, kw_only=True):
    """One node's directories, all absolute."""

    data_dir: Path
    models_dir: Path
    sync_data_dir: Path  # the data dir the sync service writes under (and locks)

    @property
    def sync_dir(self) -> Path:
        """Where batches copied from other nodes land (`received_path` below)."""
        return self.sync_data_dir / "sync"

    def worker_dir(self, node: str) -> Path:
        """The worker's records and attempts."""
        return worker_dir(self.data_dir, node)


def node_dirs(config: RrConfig, env: Mapping[str, str], home: Path) -> NodeDirs:
    """The node's directories from its config and environment; InvalidConfig when the two models_dir keys disagree."""
    data = _data_dir(config, env, home)
    given = {key: Path(value).expanduser().absolute() for key, value in
             (("distribution.models_dir", config.distribution.models_dir), ("worker.models_dir", config.worker.models_dir)) if value}
    if len(set(given.values())) > 1:
        raise InvalidConfig(
            f"distribution.models_dir ({given['distribution.models_dir']}) and worker.models_dir ({given['worker.models_dir']}) "
            "differ: the distributor would install models where jobs never look; set one of them (or both to the same path)")
    models = next(iter(given.values()), data / "models")
    sync_data = Path(config.sync.data_dir).expanduser().absolute() if config.sync.data_dir else data
    return NodeDirs(data_dir=data, models_dir=models, sync_data_dir=sync_data)


def _data_dir(config: RrConfig, env: Mapping[str, str], home: Path) -> Path:
    return (Path(config.worker.data_dir).expanduser() if config.worker.data_dir else default_data_dir(env, home)).absolute()


def worker_dir(data_dir: Path, node: str) -> Path:
    """<data dir>/worker/<node>: the worker's records, attempts and running-jobs file."""
    return data_dir / "worker" / token(node)


def jobs_file_for(config: RrConfig, node: str, env: Mapping[str, str], home: Path) -> Path:
    """`membership.jobs_file` when set, else <data dir>/worker/<node>/running-jobs.json: the worker writes it, the agent reads it.

    Not through `node_dirs`: the agent reads it and needs no models dir, so a models_dir conflict is the worker's to refuse.
    """
    if config.membership.jobs_file:
        return Path(config.membership.jobs_file).expanduser()
    return worker_dir(_data_dir(config, env, home), node) / JOBS_FILE


def data_dir(config: RrConfig, env: Mapping[str, str], home: Path) -> Path:
    """The node's data dir: what the worker and the distributor write under (and lock)."""
    return node_dirs(config, env, home).data_dir


def models_dir(config: RrConfig, env: Mapping[str, str], home: Path) -> Path:
    """Where this node's models are installed and read."""
    return node_dirs(config, env, home).models_dir


def sync_data_dir(config: RrConfig, env: Mapping[str, str], home: Path) -> Path:
    """`sync.data_dir`, else the node's data dir: the data dir the sync service writes under (and locks)."""
    return node_dirs(config, env, home).sync_data_dir


def sync_root(config: RrConfig, env: Mapping[str, str], home: Path) -> Path:
    """Where batches copied to this node land."""
    return node_dirs(config, env, home).sync_dir


# ---- models: <models dir>/... ------------------------------------------------------------


def canonical_path(root: Path, board_type: str, num_players: int) -> Path:
    """<models_dir>/canonical_<board>_<n>p.pth."""
    return canonical_of(root, config_name(board_type, num_players))


def canonical_of(root: Path, config: str) -> Path:
    """`canonical_path` of a config named as `config_name` names it."""
    return root / f"canonical_{config}{SUFFIX}"


def best_link_path(root: Path, board_type: str, num_players: int) -> Path:
    """<models_dir>/ringrift_best_<board>_<n>p.pth, the name the worker's jobs read."""
    return best_link_of(root, config_name(board_type, num_players))


def best_link_of(root: Path, config: str) -> Path:
    """`best_link_path` of a config named as `config_name` names it."""
    return root / f"ringrift_best_{config}{SUFFIX}"


def versions_dir(root: Path, board_type: str, num_players: int) -> Path:
    """<models_dir>/versions/<board>_<n>p: the kept versions of one config."""
    return root / VERSIONS / config_name(board_type, num_players)


def version_stem(model_id: str) -> str:
    """A model id as a file name."""
    return token(model_id)


def version_path(root: Path, board_type: str, num_players: int, model_id: str) -> Path:
    """<models_dir>/versions/<board>_<n>p/<model>.pth."""
    return versions_dir(root, board_type, num_players) / f"{version_stem(model_id)}{SUFFIX}"


# ---- received batches: <sync dir>/... ----------------------------------------------------
# A training job on a node that did not write a batch finds the node's copy with
# `received_path` (the origin's path in SELFPLAY_COMPLETE names a file on the origin).


def received_path(root: Path, board_type: str, num_players: int, batch_id: str, origin_path: str = "") -> Path:
    """Where this node keeps its copy of a batch (the origin file's suffix kept, e.g. .npz)."""
    suffix = Path(origin_path).suffix if origin_path else ""
    suffix = suffix if 1 < len(suffix) <= 16 else DEFAULT_SUFFIX
    return root / config_name(board_type, num_players) / f"{token(batch_id)}{suffix}"


def batch_path(root: Path, batch: Batch, origin_path: str = "") -> Path:
    """`received_path` of a folded batch."""
    return received_path(root, batch.board_type, batch.num_players, batch.batch_id, origin_path)
