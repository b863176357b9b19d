"""The rr config file (`--config`, RR_CONFIG): validated once at load, then passed down explicitly.

Each service owns one section; a section absent from the file takes its defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

import msgspec

from config.sections.admission import AdmissionSettings
from config.sections.api import ApiSettings
from config.sections.distribution import DistributionSettings
from config.sections.leadership import LeadershipSettings
from config.sections.membership import MembershipSettings
from config.sections.pipeline import PipelineSettings
from config.sections.scheduler import SchedulerSettings
from config.sections.sync import SyncSettings
from config.sections.telemetry import TelemetrySettings
from config.sections.worker import WorkerSettings
from config.yamlfile import read_yaml
from eventbus.errors import InvalidConfig
from eventbus.streams import StreamSettings
from projections.snapshotplan import SnapshotSettings


class RrConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything configurable about rr on one node."""

    streams: StreamSettings = StreamSettings()
    hosts_file: str | None = None  # the fleet's distributed_hosts.yaml (config/hosts.py)
    leadership: LeadershipSettings = LeadershipSettings()
    membership: MembershipSettings = MembershipSettings()
    pipeline: PipelineSettings = PipelineSettings()
    worker: WorkerSettings = WorkerSettings()
    distribution: DistributionSettings = DistributionSettings()
    sync: SyncSettings = SyncSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    api: ApiSettings = ApiSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    admission: AdmissionSettings = AdmissionSettings()
    # How long a service whose credentials the servers refuse (a rotation, a revocation) re-reads
    # its credentials file and retries before it exits non-zero for its service manager to restart.
    nats_auth_retry_s: float = 60.0
    snapshots: SnapshotSettings = SnapshotSettings()  # how often the leader's folds save, how many are kept


T = TypeVar("T", bound=msgspec.Struct)


def load_config(path: str | Path | None) -> RrConfig:
    """Read and validate a config file; no path means all defaults. Raises InvalidConfig naming file and key."""
    if path is None:
        return RrConfig()
    return load_yaml_as(Path(path), RrConfig)


def load_yaml_as(path: Path, kind: type[T]) -> T:
    """Parse a YAML file into a Struct, turning every mistake into one InvalidConfig line."""
    data = read_yaml(path, "config")
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise InvalidConfig(f"{path}: {describe_validation_error(exc)}") from None


_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def describe_validation_error(exc: msgspec.ValidationError, prefix: str = "") -> str:
    """'key.path: what is wrong' from msgspec's 'what is wrong - at `$.key.path`', under `prefix`."""
    text = str(exc)
    match = _PATH.search(text)
    key, what = (match.group("path"), text[: match.start()]) if match else ("", text)
    full = ".".join(p for p in (prefix, key.lstrip(".")) if p)
    return f"{full or '(top level)'}: {what}"
