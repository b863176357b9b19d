"""A fleet of network namespaces for tests: `python -m ops.fleet` driven as an operator would, the log read with `rr`."""

from __future__ import annotations

import contextlib
import json
import secrets
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventbus.events import Event, decode
from ops.fleet.plan import FleetPlan
from ops.fleet.ready import operator_env
from ops.fleet.state import load
from servicekit.looplag import BLOCK_ENV

# The shared fleet: `up` waits this long for readiness; SIGUSR2 blocks a service's loop this long (servicekit/looplag.py).
UP_TIMEOUT_S = 420
BLOCK_S = 30


def namespaces_unavailable() -> str | None:
    """Why this machine cannot host a fleet (not root, no iproute2, no netns), None when it can."""
    name = "rrprobe" + "".join(secrets.choice(string.digits) for _ in range(6))
    try:
        done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return "iproute2 (`ip`) is not installed"
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip()} (needs root on Linux)"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    return None


def skip_without_namespaces() -> None:
    """Skip, in one line, where network namespaces cannot be created."""
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(f"fleet tests need network namespaces: {reason}")


def fleet_cmd(root: Path, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m ops.fleet --root ROOT ARGS`."""
    done = subprocess.run([sys.executable, "-m", "ops.fleet", "--root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"ops.fleet {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def new_run_id() -> str:
    """A run id no other test run uses."""
    return "t" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))


class FleetLog:
    """The fleet's event log as `rr events tail --json` shows it to the operator, read incrementally."""

    def __init__(self, plan: FleetPlan) -> None:
        self.plan = plan
        self.records: list[tuple[int, Event]] = []

    def refresh(self) -> list[tuple[int, Event]]:
        """Read what is new; the whole log so far."""
        start = self.records[-1][0] + 1 if self.records else 1
        done = self.rr("events", "tail", "--since-seq", str(start), "--no-follow", "--json")
        for line in done.stdout.splitlines():
            row = json.loads(line)
            self.records.append((int(row["seq"]), decode(json.dumps(row["event"]).encode())))
        return self.records

    def of(self, kind: type, **fields: Any) -> list[Any]:
        """Events of a type whose fields equal `fields`, in log order."""
        return [e for _, e in self.records if isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())]

    def seq_of(self, event: Event) -> int:
        """An event's stream sequence."""
        return next(seq for seq, e in self.records if e is event)

    def rr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`rr ARGS` from the root namespace, as the operator."""
        return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                              env=operator_env(self.plan), timeout=timeout)


@contextlib.contextmanager
def fleet_guarded(root: Path, run_id: str) -> Iterator[None]:
    """Fleet `run_id` under `root` is taken down when the block ends, or when this process dies without ending it.

    One way down for both: a guard child (tests/procs/fleet_guard.py) waits on a pipe only this process holds and
    runs `ops.fleet down` once it closes, at the block's end or at this process's death, SIGKILL included. In a
    session of its own, so that timeout(1)'s signal to the process group does not end it before it has done so.
    """
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "guard.log", "ab") as log:
        guard = subprocess.Popen([sys.executable, "-m", "tests.procs.fleet_guard", str(root), run_id], stdin=subprocess.PIPE,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    assert guard.stdin is not None
    try:
        yield
    finally:
        guard.stdin.close()
        guard.wait(timeout=300)


def plan_of(root: Path) -> FleetPlan:
    """The plan in a fleet's state file."""
    state = load(root)
    assert state is not None, f"no fleet state in {root}"
    return state.plan


def leftovers(run_id: str, root: Path) -> list[str]:
    """Namespaces, links and processes of a fleet that still exist (a process: its environment names the fleet's root)."""
    out = []
    names = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    out += [line.split(":")[1].strip() for line in names.splitlines() if f"rr{run_id}" in line]
    out += [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split() if f"rr{run_id}" in n]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                environ = (proc / "environ").read_bytes()
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"{root}/hosts/".encode() in environ or f"rr{run_id}-" in cmdline:
                out.append(f"pid {proc.name}: {cmdline[:120]}")
    return out


@pytest.fixture(scope="session")
def shared_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetLog]:
    """The session's one fleet: 3 NATS hosts and 3 worker hosts (w-3 behind NAT), the services' loop blocker armed.

    Bringing a fleet up costs minutes of the 2-core CI machine, so the fleet tests and the chaos smoke share
    this one. tests/conftest.py runs its users last (it is torn down when the session ends), and those marked
    `fleet_faults` (which leave a fault's aftermath in the log) after the tests that need the fleet pristine.
    """
    skip_without_namespaces()
    root, run_id = tmp_path_factory.mktemp("fleet"), new_run_id()
    with fleet_guarded(root, run_id):
        with pytest.MonkeyPatch.context() as env:
            env.setenv(BLOCK_ENV, str(BLOCK_S))
            fleet_cmd(root, "up", "--workers", "3", "--nat", "1", "--run-id", run_id, "--timeout", str(UP_TIMEOUT_S),
                      timeout=UP_TIMEOUT_S + 60)
        yield FleetLog(plan_of(root))
