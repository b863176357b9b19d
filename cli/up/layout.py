"""Where `rr up` keeps its data, and the command line of each service it starts (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from config.nodedirs import default_data_dir


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """The data directory and what lives in it."""

    data_dir: Path
    store_dir: Path  # nats-server's JetStream store: a second `rr up` carries on from it
    log_dir: Path  # one <service>.log per child

    @classmethod
    def under(cls, data_dir: Path) -> Layout:
        """The layout inside one data directory."""
        return cls(data_dir=data_dir, store_dir=data_dir / "nats", log_dir=data_dir / "logs")


def resolve_data_dir(flag: Path | None, env: Mapping[str, str], home: Path) -> Path:
    """The data dir `rr up` uses (and `rr doctor` checks): --data-dir, else `default_data_dir`; absolute."""
    chosen = flag.expanduser() if flag is not None else default_data_dir(env, home)
    return chosen.absolute()


def service_command(
    python: str, name: str, *, nats_url: str, node_id: str, config_path: str | None
) -> list[str]:
    """`rr-service <name> --nats URL --node-id ID [--config PATH]`, run by this interpreter.

    `python -m` rather than the console script, so it works from a source tree as well as installed.
    """
    argv = [python, "-m", "cli.service_main", name, "--nats", nats_url, "--node-id", node_id]
    if config_path:
        argv += ["--config", config_path]
    return argv


