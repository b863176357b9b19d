"""What `rr doctor` probes, from the command line, the environment and the config (blocking file reads)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from config.hosts import load_hosts
from config.settings import RrConfig, load_config
from eventbus.connection import DEFAULT_URL
from eventbus.errors import BusError
from services.auth.credentials import CREDENTIALS_ENV, load_credentials
from services.doctor.findings import ConfigProbe
from services.doctor.probes import Target
from services.options import CommonOptions
from services.up.layout import default_data_dir


def build_target(
    options: CommonOptions,
    *,
    credentials_path: str | None,
    monitor_url: str | None,
    min_free_gib: float,
    max_skew_s: float,
    environ: Mapping[str, str] = os.environ,
) -> Target:
    """The node's config, hosts entry and credentials, each load error kept for its check."""
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
    data_dir = Path(config.worker.data_dir).expanduser() if config.worker.data_dir else default_data_dir(environ, Path.home())
    return Target(
        nats_url=options.nats_url or DEFAULT_URL, node_id=options.node_id, config=config_probe,
        credentials=creds, credentials_path=path, credentials_error=creds_error, monitor_url=monitor_url,
        expected_replicas=config.streams.replicas, leases_bucket=config.leadership.bucket,
        data_dir=str(data_dir), min_free_gib=min_free_gib, expected_gpu=expected_gpu, max_skew_s=max_skew_s,
    )


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
