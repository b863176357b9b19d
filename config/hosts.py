"""The fleet's hosts file in the seeds' schema (`distributed_hosts.yaml`): who is in the cluster and what it can do.

Keys rr does not use (ssh_key, venv_activate, ...) are kept out of the Struct; keys nobody
knows are reported as warnings, since the seeds' files carry many of their own.
"""

from __future__ import annotations

import logging
import re
import typing
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import msgspec

from config.settings import describe_validation_error
from config.yamlfile import read_yaml
from eventbus.errors import InvalidConfig
from eventbus.limits import ID_MAX, id_problem

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
    cpus: Annotated[int, msgspec.Meta(ge=1)] | None = None
    memory_gb: Annotated[float, msgspec.Meta(gt=0)] | None = None
    gpu: str = ""  # e.g. "GH200 96GB", "RTX 5090 24GB"; empty for CPU-only
    gpu_memory_gb: Annotated[float, msgspec.Meta(ge=0)] | None = None  # derived from `gpu` when absent
    max_parallel_jobs: Annotated[int, msgspec.Meta(ge=0)] = 1  # 0: a host that runs no jobs (a coordinator)
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
    raw = read_yaml(path, "hosts file")
    if not isinstance(raw, dict):
        raise InvalidConfig(f"{path}: top level must be a mapping with `hosts:`, got {type(raw).__name__}")
    hosts = raw.get("hosts")
    if hosts is not None and not isinstance(hosts, dict):
        raise InvalidConfig(f"{path}: hosts: must be a mapping of host name to its settings, got {type(hosts).__name__}")
    for name in hosts or {}:
        if not isinstance(name, str):
            raise InvalidConfig(f"{path}: hosts.{name}: a host name must be a string; quote it ('{name}')")
        problem = id_problem(name)
        if problem is not None:
            raise InvalidConfig(f"{path}: hosts.{name[:ID_MAX]}...: the host name {problem}" if len(name) > ID_MAX
                                else f"{path}: hosts.{name!r}: the host name {problem}")
    unknown = unknown_keys(raw)
    if unknown:  # a typo ("max_paralel_jobs") silently ignored is a setting silently lost
        more = f" (and {len(unknown) - 1} more: {', '.join(unknown[1:4])})" if len(unknown) > 1 else ""
        raise InvalidConfig(f"{path}: {unknown[0]}{more}; fix the spelling or remove it")
    known = _known_only(raw)
    # Validate host by host so an error names the host, not msgspec's `hosts[...]`.
    hosts = known["hosts"]
    for name, entry in hosts.items() if isinstance(hosts, dict) else ():  # not a map: the whole file's check says so
        _convert(path, f"hosts.{name}", entry, HostEntry)
    converted = _convert(path, "", known, HostsConfig)
    _check_voters(path, converted)
    return converted


T = TypeVar("T", bound=msgspec.Struct)


def _convert(path: Path, prefix: str, data: object, kind: type[T]) -> T:
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise InvalidConfig(f"{path}: {describe_validation_error(exc, prefix)}{_choices(str(exc))}") from None


_ENUM_FIELD = re.compile(r"Invalid enum value .* - at `\$\.(?P<field>[a-z_]+)")
_CHOICES = {"status": typing.get_args(HostStatus), "role": typing.get_args(HostRole), "roles": typing.get_args(HostRole)}


def _choices(message: str) -> str:
    """' (one of: ...)' after an invalid status or role, so the fix is in the message."""
    match = _ENUM_FIELD.search(message)
    allowed = _CHOICES.get(match.group("field"), ()) if match else ()
    return f" (one of: {', '.join(allowed)})" if allowed else ""


def unknown_keys(raw: dict[str, object]) -> list[str]:
    """The keys neither rr nor the seeds' schema knows (typos, mostly), with their paths."""
    top = set(HostsConfig.__struct_fields__)
    warnings = [f"{k}: unknown key" for k in raw if k not in top and k not in ("voters", "nodes")]
    fields = set(HostEntry.__struct_fields__) | KNOWN_UNUSED_KEYS
    hosts = raw.get("hosts")
    for name, entry in (hosts.items() if isinstance(hosts, dict) else ()):
        if isinstance(entry, dict):
            warnings += [f"hosts.{name}.{k}: unknown key" for k in entry if k not in fields]
    return warnings


def _known_only(raw: dict[str, object]) -> dict[str, object]:
    hosts = raw.get("hosts") or {}
    fields = set(HostEntry.__struct_fields__)
    clean_hosts = {
        name: ({k: v for k, v in entry.items() if k in fields} if isinstance(entry, dict) else entry)
        for name, entry in hosts.items()
    } if isinstance(hosts, dict) else hosts
    return {"hosts": clean_hosts, "p2p_voters": raw.get("p2p_voters") or raw.get("voters") or []}


def _check_voters(path: Path, hosts: HostsConfig) -> None:
    missing = [v for v in hosts.p2p_voters if v not in hosts.hosts]
    if missing:
        raise InvalidConfig(f"{path}: p2p_voters: {', '.join(missing)} not listed under hosts")
