"""The packages keep their layers: an import may only go down, and a new upward one fails here.

From the bottom up:

    eventbus      the bus and the event schemas; imports nothing of ours, and is the only importer of nats
    projections   pure folds over events: of eventbus only the modules that do no I/O, no asyncio, no nats
    config        the settings, validated at load; each section of the config file in config/sections/
    libraries     what the services share: servicekit (runtime, telemetry, snapshots, admission, credentials),
                  cluster (leadership, membership, the distribution and sync cores the leader and the
                  nodes share) and workload (the reference game, net and jobs)
    services      the runnable services (services/<name>/); each reaches another only through events and the libraries
    cli           the command line (rr, rr-service, rr up, rr doctor, rr whatif, rr auth gen)

ALLOWED lists the upward imports that remain, each with why (none today); an entry needs a
module to move to another package. It is a ratchet: an upward import not listed fails, and so
does an entry that no longer happens (delete it).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each top-level package and its layer, bottom up; a library or a service is told apart from its siblings by its unit.
LAYER_OF = {"eventbus": "eventbus", "projections": "projections", "config": "config",
            "servicekit": "libraries", "cluster": "libraries", "workload": "libraries", "services": "services", "cli": "cli"}
PACKAGES = tuple(LAYER_OF)
LAYERS = ("eventbus", "projections", "config", "libraries", "services", "cli")
# Modules no projection may import: they talk to the server (found below: they import nats or asyncio).
IO_ROOTS = ("nats", "asyncio")

# Why an upward import is still here; each needs a module moved to another package. None is left: keep it so.
ALLOWED: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _named(name: str, path: Path, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The modules one import statement names; `from a import b` names a.b when that is a module, else a."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    subs = {f"{base}.{alias.name}" for alias in node.names}
    return (subs & MODULES.keys()) | ({base} if subs - MODULES.keys() else set())


def _imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(every module `name` imports, at the top or inside a function; those it imports when it is loaded)."""
    tree = ast.parse(path.read_text(), str(path))
    every: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            every |= _named(name, path, node)
    on_load: set[str] = set()
    todo: list[ast.AST] = list(tree.body)
    while todo:  # module-level statements, into if/try blocks but not into functions or classes
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            on_load |= _named(name, path, node)
        elif isinstance(node, ast.If | ast.Try):
            todo += [*node.body, *node.orelse, *getattr(node, "finalbody", []), *(s for h in getattr(node, "handlers", []) for s in h.body)]
    return every, on_load


_FOUND = {name: _imports(name, path) for name, path in MODULES.items()}
IMPORTS = {name: every for name, (every, _) in _FOUND.items()}
LOADS = {name: on_load for name, (_, on_load) in _FOUND.items()}


def layer(name: str) -> tuple[str, str]:
    """(layer, unit): the unit is the service (services/<name>/) an import belongs to, so siblings can be told apart."""
    parts = name.split(".")
    kind = LAYER_OF.get(parts[0])
    if kind is None:
        raise AssertionError(f"{name}: package {parts[0]}/ is in no layer; add it to LAYER_OF in {__file__}")
    if kind == "services":
        if len(parts) == 1:
            return kind, "services"
        if not (ROOT / "services" / parts[1]).is_dir():
            raise AssertionError(f"{name}: services/ holds only runnable services, one package each; move {parts[1]} to a library")
        return kind, parts[1]
    return kind, parts[0]


def _does_io() -> set[str]:
    """The eventbus modules that load nats or asyncio when loaded, directly or through another eventbus module.

    Only what a module imports when it is loaded counts: eventbus.errors translates nats errors
    with an import inside the function that needs it, and stays usable by a pure fold.
    """
    io = {m for m in MODULES if m.startswith("eventbus") and any(i.split(".")[0] in IO_ROOTS for i in LOADS[m])}
    while True:
        more = {m for m in MODULES if m.startswith("eventbus") and m not in io and LOADS[m] & io}
        if not more:
            return io
        io |= more


IO_MODULES = _does_io()


def problem(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported`, or None when it may."""
    top = imported.split(".")[0]
    if top == "nats":
        return None if importer.startswith("eventbus") else "only eventbus imports nats"
    if importer.startswith("projections") and (top == "asyncio" or imported in IO_MODULES):
        return "projections are pure: no asyncio and no eventbus module that does I/O"
    if imported not in MODULES:
        return None  # the standard library or a third-party package
    (kind, unit), (to_kind, to_unit) = layer(importer), layer(imported)
    if LAYERS.index(to_kind) > LAYERS.index(kind):
        return f"{kind} may not import {to_kind}"
    if kind == to_kind == "services" and unit != to_unit:
        return "a service reaches another only through events and the libraries"
    return None


def upward() -> dict[tuple[str, str], str]:
    """Every forbidden import in the tree, with why it is forbidden."""
    found = {}
    for importer, imported in sorted((m, i) for m, imports in IMPORTS.items() for i in imports):
        why = problem(importer, imported)
        if why is not None:
            found[(importer, imported)] = why
    return found


def test_no_new_upward_import() -> None:
    new = {pair: why for pair, why in upward().items() if pair not in ALLOWED}
    assert not new, "upward imports (move the function down, or import what it needs from a lower layer):\n" + "\n".join(
        f"  {a} imports {b}: {why}" for (a, b), why in new.items())


def test_every_allowed_upward_import_still_happens() -> None:
    stale = sorted(set(ALLOWED) - set(upward()))
    assert not stale, f"no longer upward imports: delete them from ALLOWED in {__file__}: {stale}"


def test_the_checker_sees_upward_imports() -> None:
    assert problem("eventbus.publisher", "projections.base") == "eventbus may not import projections"
    assert problem("servicekit.runtime", "nats.js.errors") == "only eventbus imports nats"
    assert problem("projections.work", "eventbus.history") is not None and problem("projections.work", "eventbus.events") is None
    assert problem("projections.work", "asyncio") is not None
    assert problem("config.settings", "servicekit.runtime") == "config may not import libraries"
    assert problem("config.settings", "services.leader.policy") == "config may not import services"
    assert problem("projections.work", "servicekit.rebuild") == "projections may not import libraries"
    assert problem("servicekit.runtime", "services.api.app") == "libraries may not import services"
    assert problem("services.api.service", "cli.commands.work") == "services may not import cli"
    assert problem("services.worker.service", "services.agent.resources") == "a service reaches another only through events and the libraries"
    assert problem("services.worker.service", "cluster.leadership.fencing") is None
    assert problem("services.leader.service", "services.distributor.agent") == "a service reaches another only through events and the libraries"
    assert problem("services.distributor.agent", "cluster.distribution.failures") is None
    assert problem("cli.commands.status", "services.leader.policy") is None
