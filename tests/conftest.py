"""Fixtures that are real resources: nats-server processes on random loopback ports."""

from __future__ import annotations

import inspect
import os
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventbus.connection import Bus
from eventbus.natsserver import NatsCluster, NatsServer, ServerSpec, free_port
from tests import background_runs, termination
from tests.bus_harness import provisioned_bus
from tests.fleet_harness import shared_fleet  # noqa: F401 (registered here once: a session fixture imported per module runs per module)
from tests.helpers import TEST_STORE_LIMIT
from tests.helpers import eventually as _eventually

DOCKER_ENV = "RR_TEST_DOCKER"

# torch in the test process runs one thread, as the workload programs do (workload/selfplay.py): with its
# default of one per core its threads spin against the servers and services the tests run beside them, and
# the in-process games of tests/test_workload_batched.py took 98 s instead of 1 s on a loaded 2-core machine.
# Set before any test module imports torch (none of the above does); subprocesses inherit it, as the workload sets it anyway.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Every rr, rr-service, rr up, workload job and child pytest the tests start is a Python process. Where the shell
# sets PYTHONDONTWRITEBYTECODE=1 (this project's CI machine does, as many container images do) every one of them
# compiled the project from source: tests/test_cli.py with tests/test_datadir_lock.py took 103-110 s so, 96-100 s with
# the children caching bytecode in __pycache__ (gitignored) as Python does by default (ops/bench/README.md).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """One JetStream nats-server with its store in tmp_path, stopped at teardown."""
    # The streams reserve their production sizes (about 24 GiB) while the tests write kilobytes: an explicit
    # store limit keeps the tests independent of how much disk this machine has free (the server's default is
    # 3/4 of it). The full-disk behaviour has its own tests with their own, small limits.
    spec = ServerSpec(name="rr-test", port=free_port(), store_dir=str(tmp_path / "nats" / "jetstream"),
                      max_file_store=TEST_STORE_LIMIT)
    with NatsServer(spec) as server:
        yield server


@pytest.fixture
def nats_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The client URL of a JetStream server: a container when RR_TEST_DOCKER=1 and Docker answers, else nats_server."""
    if os.environ.get(DOCKER_ENV) == "1" and _docker_answers():
        yield from _container_url()
        return
    server: NatsServer = request.getfixturevalue("nats_server")
    yield server.url


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]  # only imported when containers are asked for

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no daemon": fall back to the binary
        return False


def _container_url() -> Iterator[str]:
    from testcontainers.community.nats import NatsContainer

    with NatsContainer(jetstream=True) as container:
        yield container.nats_uri()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A started 3-node JetStream cluster with its stores in tmp_path, stopped at teardown."""
    cluster = NatsCluster.create(tmp_path / "cluster", size=3)
    with cluster:
        yield cluster


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """The `tests.helpers.eventually` poller: `await eventually(predicate, timeout=..., message=...)`."""
    return _eventually


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A connection as node "test" to the test server, its streams provisioned (modules may define their own)."""
    async with provisioned_bus(nats_url, node_id="test") as connected:
        yield connected


# ---- tiers -------------------------------------------------------------------------------------
# Every test gets one tier marker, from what it uses, so a new test is tiered without effort:
#   pure     no server, no process          server   one nats-server (nats_url, nats_server, bus ...)
#   process  real rr processes (tests.procs, subprocess, rr-service)
#   cluster  a 3-server cluster              fleet    hosts as network namespaces (marked by hand)
# What a test uses is read from its own code, that of every fixture it uses and of the test
# helpers (functions and classes under tests/) these name, and of the background run it reads (tests/background_runs.py).
# A tier marker written on the test wins. tests/README.md says more.
TIERS = ("pure", "server", "process", "cluster", "fleet")
_TELLS = {  # names in a test's or fixture's code that put it in a tier (the highest found wins)
    "cluster": ("nats_cluster", "NatsCluster"),
    "process": ("subprocess", "create_subprocess_exec", "Popen", "tests.procs", "tests/procs", "rr-service"),
    "server": ("nats_url", "nats_server", "NatsServer", "provisioned_bus", "connect("),
}


# Each test reads the code of the same fixtures and helpers again: read each object's source once per session
# (inspect.getsource re-reads and scans its file each time, about 40% of collecting the suite). Keyed by id(),
# with the object kept alive beside its code so that no id is reused by another object meanwhile.
_SOURCES: dict[int, tuple[object, str]] = {}


def _code_of(obj: object) -> str:
    known = _SOURCES.get(id(obj))
    if known is not None:
        return known[1]
    try:
        code = inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        code = ""
    _SOURCES[id(obj)] = (obj, code)
    return code


def _names_used(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # lambdas, nested functions, comprehensions
            names |= _names_used(const)
    return names


def _codes(obj: object, seen: set[int]) -> list[str]:
    """The code of `obj` and of the test helpers (functions and classes under tests/) it names, recursively."""
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    # Anything from tests/procs/ is there to run as, or start, a child process.
    codes = [_code_of(obj), "tests.procs" if getattr(obj, "__module__", "").startswith("tests.procs") else ""]
    if inspect.isclass(obj):
        functions = [f for f in vars(obj).values() if inspect.isfunction(f)]
    else:
        functions = [inspect.unwrap(obj)] if callable(obj) else []  # type: ignore[arg-type]
    for function in functions:
        scope = getattr(function, "__globals__", {})
        for name in _names_used(function.__code__) if hasattr(function, "__code__") else ():
            used = scope.get(name)
            if (inspect.isfunction(used) or inspect.isclass(used)) and getattr(used, "__module__", "").startswith("tests"):
                codes += _codes(used, seen)
    return codes


def _tier_of(item: pytest.Item) -> str:
    written = [m.name for m in item.iter_markers() if m.name in TIERS]
    if written:
        return max(written, key=TIERS.index)
    seen: set[int] = set()
    function = getattr(item, "function", None)
    codes = _codes(function, seen) if function is not None else []
    fixtures = getattr(item, "_fixtureinfo", None)
    for name, defs in (fixtures.name2fixturedefs.items() if fixtures is not None else ()):
        codes += [name] + [c for d in defs for c in _codes(d.func, seen)]
    codes.append(background_runs.code_of((item.path.name, item.name)))  # a child it only reads the result of
    found = "pure"
    for code in codes:
        for tier, tells in _TELLS.items():
            if TIERS.index(tier) > TIERS.index(found) and any(t in code for t in tells):
                found = tier
    return found


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (timeout(1), a cancelled job) tears the session's fixtures down instead of orphaning their servers and fleets."""
    termination.unwind_on_sigterm()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, so `-m pure`, `-m "not cluster and not fleet"` ... select by tier; the fleet's users last."""
    for item in items:
        tier = _tier_of(item)
        if not item.get_closest_marker(tier):
            item.add_marker(getattr(pytest.mark, tier))
    items.sort(key=_session_order)  # stable: every other test keeps its place


def _session_order(item: pytest.Item) -> int:
    """Where a test goes: the session's fleet (a session fixture) is torn down only when the session ends, so its
    users run last, with nothing after them to slow; those marked `fleet_faults` after those that need it pristine.
    A test that only reads a background run's report goes just before them, so that its run (tests/background_runs.py)
    has the whole session to pass beside, wherever its file sorts."""
    if "shared_fleet" not in getattr(item, "fixturenames", ()):
        return 1 if background_runs.reads_a_run((item.path.name, item.name)) else 0
    return 3 if item.get_closest_marker("fleet_faults") else 2


def pytest_collection_finish(session: pytest.Session) -> None:
    """Queue the runs some tests only read the result of (the type check, the failing fleet's minute, the quorum loss):
    they run in the background, one at a time, on the CPU and wall time the waiting tests leave idle (tests/background_runs.py)."""
    background_runs.queue_collected(session)


def pytest_runtest_setup(item: pytest.Item) -> None:
    termination.unwind_on_sigterm()  # again: the event loop of a test before may have put the default back
    background_runs.start_next(item.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    background_runs.stop_all(session)
