"""Python packages rr needs, checked before anything imports them: a missing one is named with its pip command.

Standard library only, so that it works in exactly the broken environments it diagnoses
(the seeds' nodes died on `ModuleNotFoundError: psutil` and `yaml`, and nobody saw why).
"""

from __future__ import annotations

import importlib
import importlib.util
import shlex
import sys
from collections.abc import Iterable, Mapping
from typing import NamedTuple

# import name -> distribution to install
REQUIRED: Mapping[str, str] = {
    "nats": "nats-py",
    "nkeys": "nkeys",  # node keys: connecting with credentials signs with them
    "msgspec": "msgspec",
    "immutables": "immutables",  # the folds' persistent maps (projections/pmap.py)
    "zstandard": "zstandard",  # snapshots' codec (eventbus/snapshotinflate.py)
    "yaml": "PyYAML",
    "psutil": "psutil",
    "opentelemetry": "opentelemetry-sdk",
    # the api service's HTTP stack
    "litestar": "litestar",
    "uvicorn": "uvicorn",
    "h11": "h11",
    "prometheus_client": "prometheus-client",
}
# The reference workload's packages: jobs that play or train import them, so a node that runs jobs
# (every `rr up`, every worker) needs them; a coordinator-only node runs without them.
WORKLOAD: Mapping[str, str] = {"numpy": "numpy", "torch": "torch"}
OPTIONAL: Mapping[str, str] = {}
SERVICE_MODULES = tuple(REQUIRED)
# The api's HTTP stack: a service child only checks it is installed (importing it costs ~0.5 s of CPU, and only
# the api uses it); every other required package it imports at once, so a broken install (a package that is
# there but raises on import) is named in one line too, not a traceback later.
HTTP_STACK = ("litestar", "uvicorn", "h11", "prometheus_client")
SERVICE_IMPORTS = tuple(m for m in SERVICE_MODULES if m not in HTTP_STACK)
WORKER_MODULES = SERVICE_MODULES + tuple(WORKLOAD)


class PackageStatus(NamedTuple):
    """Whether one package imports here, and its installed version."""

    # A NamedTuple, not a dataclass: every `rr` start imports this module, and dataclasses pulls in inspect (~50 ms).

    module: str
    distribution: str
    importable: bool
    version: str = ""
    error: str = ""


def distribution_of(module: str) -> str:
    """The pip name that provides `module`."""
    return {**REQUIRED, **WORKLOAD, **OPTIONAL}.get(module, module)


def package_status(module: str) -> PackageStatus:
    """Import `module` (blocking: torch takes seconds) and report its version or the import error."""
    dist = distribution_of(module)
    try:
        imported = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything, not only ImportError
        return PackageStatus(module, dist, False, error=f"{type(exc).__name__}: {exc}")
    version = getattr(imported, "__version__", "")
    if not isinstance(version, str) or not version:
        version = installed_version(dist)
    return PackageStatus(module, dist, True, version=version)


def installed_version(distribution: str) -> str:
    """The installed version of `distribution`, "" when it is not installed as a distribution."""
    from importlib import metadata  # here: it costs every `rr` and `rr-service` start ~70 ms, and only doctor asks

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def install_hint(distributions: Iterable[str]) -> str:
    """The pip command that installs `distributions` into this interpreter."""
    names = " ".join(shlex.quote(d) for d in distributions)
    return f"{shlex.quote(sys.executable)} -m pip install {names}"


def missing_message(missing: list[PackageStatus]) -> str:
    """One line naming the missing packages, why each failed, and the command that fixes it."""
    what = "; ".join(f"{p.module} ({p.distribution}): {p.error}" for p in missing)
    return f"rr: missing Python packages: {what}. Fix: {install_hint(p.distribution for p in missing)}"


def package_present(module: str) -> PackageStatus:
    """Whether `module` is installed, without importing it (torch costs seconds and hundreds of MB)."""
    dist = distribution_of(module)
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError) as exc:
        return PackageStatus(module, dist, False, error=f"{type(exc).__name__}: {exc}")
    return PackageStatus(module, dist, found, error="" if found else f"No module named {module!r}")


def require_dependencies(names: Iterable[str] = SERVICE_MODULES, *, present: Iterable[str] = ()) -> None:
    """Exit with the pip command when any of `names` cannot be imported or `present` is not installed."""
    statuses = [*map(package_status, names), *map(package_present, present)]
    missing = [status for status in statuses if not status.importable]
    if missing:
        raise SystemExit(missing_message(missing))


if __name__ == "__main__":
    # `python -m cli.doctor.deps`: the units' ExecStartPre. It imports nothing of rr but
    # this module, so it works where `rr` itself cannot start for a missing package.
    if sys.version_info < (3, 11):  # noqa: UP036 - this runs before the venv is known good, maybe on an older Python
        raise SystemExit(f"rr: Python {sys.version.split()[0]} is too old; install 3.11 or newer and recreate the venv")
    require_dependencies(WORKER_MODULES)
    print(f"rr: Python {sys.version.split()[0]} and every required package import")
