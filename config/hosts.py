"""The fleet's hosts file in the seeds' schema (`distributed_hosts.yaml`): who is in the cluster and what it can do.

Keys rr does not use (ssh_key, venv_activate, ...) are kept out of the Struct; keys nobody
knows are reported as warnings, since the seeds' files carry many of their own.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

import msgspec
import yaml

from config.settings import describe_validation_error
from eventbus.errors import InvalidConfig

log = logging.getLogger(__name__)

HostStatus = Literal["ready", "disabled", "maintenance"]
HostRole = Literal["coordinator", "selfplay", "nn_training", "training", "mixed", "cpu_selfplay", "evaluation"]

# Keys of the seeds' schema that rr reads nothing from but accepts silently.
KNOWN_UNUSED_KEYS = frozenset(
    {"ssh_host", "ssh_user", "ssh_key", "ssh_port", "ringrift_path", "venv_activate", "tailscale_ip",
     "host", "port", "provider", "notes", "advertise_host", "labels"}
)


class HostEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One host of the fleet as the operators describe it."""

    status: HostStatus = "ready"
    role: HostRole = "mixed"
    roles: list[HostRole] = []  # several roles; `role` is the seeds' single one
    cpus: int | None = None
    memory_gb: float | None = None
    gpu: str = ""  # e.g. "GH200 96GB", "RTX 5090 24GB"; empty for CPU-only
    gpu_memory_gb: float | None = None  # derived from `gpu` when absent
    max_parallel_jobs: int = 1
    ephemeral: bool = False  # rented spot/marketplace machines that may vanish

    def all_roles(self) -> list[str]:
        """The host's roles, whichever of `role` / `roles` the file used."""
        return list(self.roles) if self.roles else [self.role]

    def vram_gb(self) -> float:
        """GPU memory in GB: explicit, or read from the `gpu` name ("RTX 5090 24GB"), else 0."""
        if self.gpu_memory_gb is not None:
            return self.gpu_memory_gb
        match = re.search(r"(\d+(?:\.\d+)?)\s*GB", self.gpu, re.IGNORECASE)
        return float(match.group(1)) if match else 0.0


class HostsConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The whole hosts file."""

    hosts: dict[str, HostEntry] = {}
    p2p_voters: list[str] = []  # the seeds' voters: here, the nodes allowed to campaign for leadership


def load_hosts(path: str | Path) -> HostsConfig:
    """Read and validate a hosts file; raises InvalidConfig naming the file, the key path and the problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidConfig(f"{path}: cannot read hosts file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise InvalidConfig(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise InvalidConfig(f"{path}: top level must be a mapping with `hosts:`, got {type(raw).__name__}")
    for warning in unknown_keys(raw):
        log.warning("%s: %s", path, warning)
    known = _known_only(raw)
    if isinstance(known["hosts"], dict):
        # Validate host by host so an error names the host, not msgspec's `hosts[...]`.
        for name, entry in known["hosts"].items():
            _convert(path, f"hosts.{name}", entry, HostEntry)
    hosts = _convert(path, "", known, HostsConfig)
    _check_voters(path, hosts)
    return hosts


def _convert(path: Path, prefix: str, data: object, kind: type[msgspec.Struct]) -> msgspec.Struct:  # type: ignore[type-arg]
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise InvalidConfig(f"{path}: {describe_validation_error(exc, prefix)}") from None


def unknown_keys(raw: dict[str, object]) -> list[str]:
    """Warnings for keys neither rr nor the seeds' schema knows (typos, mostly)."""
    top = set(HostsConfig.__struct_fields__)
    warnings = [f"unknown key `{k}` ignored" for k in raw if k not in top and k not in ("voters", "nodes")]
    fields = set(HostEntry.__struct_fields__) | KNOWN_UNUSED_KEYS
    for name, entry in (raw.get("hosts") or {}).items():  # type: ignore[union-attr]
        if isinstance(entry, dict):
            warnings += [f"hosts.{name}.{k}: unknown key ignored" for k in entry if k not in fields]
    return warnings


def _known_only(raw: dict[str, object]) -> dict[str, object]:
    hosts = raw.get("hosts") or {}
    fields = set(HostEntry.__struct_fields__)
    clean_hosts = {
        name: ({k: v for k, v in entry.items() if k in fields} if isinstance(entry, dict) else entry)
        for name, entry in hosts.items()  # type: ignore[union-attr]
    } if isinstance(hosts, dict) else hosts
    return {"hosts": clean_hosts, "p2p_voters": raw.get("p2p_voters") or raw.get("voters") or []}


def _check_voters(path: Path, hosts: HostsConfig) -> None:
    missing = [v for v in hosts.p2p_voters if v not in hosts.hosts]
    if missing and hosts.hosts:
        raise InvalidConfig(f"{path}: p2p_voters: {', '.join(missing)} not listed under hosts")
