"""Every directory a node's services read or write, resolved in one place (pure).

The worker, the distributor and the sync service must agree on where models and received
batches live: a model installed where the worker does not look is never used. Each of them
asks `node_dirs` and nothing else.

    data dir      worker.data_dir, else RR_DATA_DIR, else $XDG_DATA_HOME/rr, else ~/.local/share/rr
    models        distribution.models_dir or worker.models_dir (set both only to the same path), else <data dir>/models
    sync          <sync.data_dir or data dir>/sync   batches copied here from other nodes
    worker        <data dir>/worker/<node>          job records, attempts and fetched candidates
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from config.settings import RrConfig
from eventbus.errors import InvalidConfig
from eventbus.subjects import token


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
        """Where batches copied from other nodes land (services/sync/paths.py)."""
        return self.sync_data_dir / "sync"

    def worker_dir(self, node: str) -> Path:
        """The worker's records and attempts."""
        return self.data_dir / "worker" / token(node)


def node_dirs(config: RrConfig, env: Mapping[str, str], home: Path) -> NodeDirs:
    """The node's directories from its config and environment; InvalidConfig when the two models_dir keys disagree."""
    data = Path(config.worker.data_dir).expanduser() if config.worker.data_dir else default_data_dir(env, home)
    data = data.absolute()
    given = {key: Path(value).expanduser().absolute() for key, value in
             (("distribution.models_dir", config.distribution.models_dir), ("worker.models_dir", config.worker.models_dir)) if value}
    if len(set(given.values())) > 1:
        raise InvalidConfig(
            f"distribution.models_dir ({given['distribution.models_dir']}) and worker.models_dir ({given['worker.models_dir']}) "
            "differ: the distributor would install models where jobs never look; set one of them (or both to the same path)")
    models = next(iter(given.values()), data / "models")
    sync_data = Path(config.sync.data_dir).expanduser().absolute() if config.sync.data_dir else data
    return NodeDirs(data_dir=data, models_dir=models, sync_data_dir=sync_data)
