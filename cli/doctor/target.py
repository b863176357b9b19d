"""What `rr doctor` probes, from the command line, the environment and the config (blocking file reads)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cli.doctor.findings import ConfigProbe
from cli.doctor.probes import Target
from cli.up.layout import resolve_data_dir
from cli.up.lock import LOCK_NAME, UP_OWNER, LockOwner, pid_alive, read_owner
from config.hosts import load_hosts
from config.settings import RrConfig, load_config
from eventbus.connection import DEFAULT_URL
from eventbus.errors import BusError
from servicekit.auth.credentials import CREDENTIALS_ENV, load_credentials
from servicekit.options import CommonOptions


def build_target(
    options: CommonOptions,
    *,
    credentials_path: str | None,
    monitor_url: str | None,
    min_free_gib: float,
    max_skew_s: float,
    data_dir: Path | None = None,
    history_limit_s: float = 10.0,
    election_window_s: float = 600.0,
    max_elections: int = 6,
    environ: Mapping[str, str] = os.environ,
    home: Path | None = None,
) -> Target:
    """The node's config, hosts entry and credentials, each load error kept for its check.

    The data dir is the one `rr up` would use (--data-dir, RR_DATA_DIR, XDG_DATA_HOME, ~/.local/share/rr);
    when a running `rr up` holds it and no NATS URL was given, its server is the one probed.
    """
    config, config_probe = _config(options.config_path)
    expected_gpu = ""
    if config.hosts_file and not config_probe.error:
        config_probe, expected_gpu = _hosts(config_probe, config.hosts_file, options.node_id)
    path = credentials_path if credentials_path is not None else environ.get(CREDENTIALS_ENV, "")
    creds, creds_error = None, ""
    if path:
        try:
            creds = load_credentials(path)
        except BusError as exc:
            creds_error = str(exc)
    chosen = resolve_data_dir(data_dir, environ, home if home is not None else Path.home())
    up = running_up(chosen)
    nats_url = options.nats_url or (up.nats_url if up is not None and up.nats_url else DEFAULT_URL)
    embedded = up is not None and up.embedded and nats_url == up.nats_url
    return Target(
        nats_url=nats_url, node_id=options.node_id, config=config_probe,
        credentials=creds, credentials_path=path, credentials_error=creds_error,
        monitor_url="" if embedded and monitor_url is None else monitor_url,  # the embedded server has no monitor port
        expected_replicas=config.streams.replicas, leases_bucket=config.leadership.bucket,
        data_dir=str(chosen), min_free_gib=min_free_gib, expected_gpu=expected_gpu, max_skew_s=max_skew_s,
        embedded=embedded, history_limit_s=history_limit_s, election_window_s=election_window_s, max_elections=max_elections,
    )


def running_up(data_dir: Path) -> LockOwner | None:
    """The `rr up` whose lock file in `data_dir` names a running process, if any."""
    owner = read_owner(data_dir / LOCK_NAME)
    if owner is None or owner.owner != UP_OWNER or not pid_alive(owner.pid):
        return None
    return owner


def _config(path: str | None) -> tuple[RrConfig, ConfigProbe]:
    try:
        return load_config(path), ConfigProbe(path=path or "")
    except BusError as exc:
        return RrConfig(), ConfigProbe(path=path or "", error=str(exc))


def _hosts(probe: ConfigProbe, hosts_path: str, node_id: str) -> tuple[ConfigProbe, str]:
    try:
        hosts = load_hosts(hosts_path)
    except BusError as exc:
        return ConfigProbe(path=probe.path, hosts_path=hosts_path, hosts_error=str(exc)), ""
    entry = hosts.hosts.get(node_id)
    listed = ConfigProbe(path=probe.path, hosts_path=hosts_path, node_in_hosts=entry is not None)
    return listed, entry.gpu if entry is not None else ""
