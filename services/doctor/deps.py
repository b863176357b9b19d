"""Python packages rr needs, checked before anything imports them: a missing one is named with its pip command.

Standard library only, so that it works in exactly the broken environments it diagnoses
(the seeds' nodes died on `ModuleNotFoundError: psutil` and `yaml`, and nobody saw why).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# import name -> distribution to install
REQUIRED: Mapping[str, str] = {
    "nats": "nats-py",
    "msgspec": "msgspec",
    "yaml": "PyYAML",
    "psutil": "psutil",
    "opentelemetry": "opentelemetry-sdk",
}
# Needed only where jobs train or play with the network; a coordinator runs without it.
OPTIONAL: Mapping[str, str] = {"torch": "torch"}
SERVICE_MODULES = tuple(REQUIRED)


@dataclass(frozen=True)
class PackageStatus:
    """Whether one package imports here, and its installed version."""

    module: str
    distribution: str
    importable: bool
    version: str = ""
    error: str = ""


def distribution_of(module: str) -> str:
    """The pip name that provides `module`."""
    return {**REQUIRED, **OPTIONAL}.get(module, module)


def package_status(module: str) -> PackageStatus:
    """Import `module` (blocking: torch takes seconds) and report its version or the import error."""
    dist = distribution_of(module)
    try:
        imported = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything, not only ImportError
        return PackageStatus(module, dist, False, error=f"{type(exc).__name__}: {exc}")
    version = getattr(imported, "__version__", "")
    if not isinstance(version, str) or not version:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = ""
    return PackageStatus(module, dist, True, version=version)


def install_hint(distributions: Iterable[str]) -> str:
    """The pip command that installs `distributions` into this interpreter."""
    names = " ".join(shlex.quote(d) for d in distributions)
    return f"{shlex.quote(sys.executable)} -m pip install {names}"


def missing_message(missing: list[PackageStatus]) -> str:
    """One line naming the missing packages, why each failed, and the command that fixes it."""
    what = "; ".join(f"{p.module} ({p.distribution}): {p.error}" for p in missing)
    return f"rr: missing Python packages: {what}. Fix: {install_hint(p.distribution for p in missing)}"


def require_dependencies(names: Iterable[str] = SERVICE_MODULES) -> None:
    """Exit with the pip command when any of `names` cannot be imported (call before importing them)."""
    missing = [status for status in map(package_status, names) if not status.importable]
    if missing:
        raise SystemExit(missing_message(missing))


if __name__ == "__main__":
    # `python -m services.doctor.deps`: the units' ExecStartPre. It imports nothing of rr but
    # this module, so it works where `rr` itself cannot start for a missing package.
    if sys.version_info < (3, 11):
        raise SystemExit(f"rr: Python {sys.version.split()[0]} is too old; install 3.11 or newer and recreate the venv")
    require_dependencies()
    print(f"rr: Python {sys.version.split()[0]} and every required package import")
