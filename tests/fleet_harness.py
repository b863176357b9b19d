"""A fleet of network namespaces for tests: `python -m ops.fleet` driven as an operator would, the log read with `rr`."""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventbus.events import Event, decode
from ops.fleet.files import Workload
from ops.fleet.plan import FleetPlan
from ops.fleet.ready import operator_env
from ops.fleet.state import load
from servicekit.looplag import BLOCK_ENV

# The shared fleet: `up` waits this long for readiness; SIGUSR2 blocks a service's loop this long (servicekit/looplag.py).
UP_TIMEOUT_S = 420
# The shared fleet's scheduler lease: 14 s renewed every 1.4 s, where the operator's fleet has 20 s every 4 s
# (ops/fleet/files.py). A leader still rides out 9.8 s without a lease-bucket leader (14 s less the 2.8 s safety
# margin and one renewal), beyond the 4-9 s nats-server waits to campaign after a cut server returns (10 s renewed
# every 2 s, 6 s, moved the scheduler twice in one cut: ops/RUNBOOK.md), and every stop, kill or block of a leader
# (the takeover test, the chaos smoke's stop and kill) waits 14 s out instead of 20.
LEASE = {"lease_ttl_s": 14, "lease_renew_every": 0.1}
# The fleet's gate (one won game promotes, ops/fleet/files.py) over 40 games instead of 12. The first candidates
# won only as the first mover, 5 of 22 such games (7 sessions' first matches against the anchor): 2 of 7 lost
# all 12 and the generation test waited for another selfplay, training and evaluation round. 20 first-mover
# games leave under 1% of sessions without a win, against ~21% with 6 (ops/bench/README.md). A promotion still
# needs a game won against the anchor; losses never promote (tests/test_fleet_plan.py).
GATE = {**Workload().gate, "max_games": 40}
TEST_WORKLOAD = {**LEASE, "gate": GATE}
# Longer than the lease by half of it, as 30 s was to 20 s: a successor is elected while the old leader still
# sleeps (watchers campaign at the lease's expiry marker), so it wakes deposed.
BLOCK_S = LEASE["lease_ttl_s"] * 3 // 2


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


def _lines_into(child: subprocess.Popen[str], lines: queue.SimpleQueue[str]) -> None:
    """Every line `child` prints, until it exits (a JSON event per line; anything else is not kept)."""
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("{"):
            lines.put(line)


class FleetLog:
    """The fleet's event log as `rr events tail --json` shows it to the operator, followed live.

    One `rr events tail` child follows the log for the whole session (an ordered consumer: no gap, no
    duplicate), and a thread keeps what it prints. Starting `rr` for each read cost 2-5 s of the shared
    2-core machine per poll (ops/bench/README.md, "The fleet tests' wall time").
    """

    def __init__(self, plan: FleetPlan) -> None:
        self.plan = plan
        self.records: list[tuple[int, Event]] = []
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._follower: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def refresh(self) -> list[tuple[int, Event]]:
        """Take in what the follower has printed since; the whole log so far. Where no follower runs (the first
        call, or it exited), what is stored is read first, so the log is at least as new as the call."""
        if self._follower is None or self._follower.poll() is not None:
            self._stop()  # one that exited (its server cut off, say): what it printed is kept, its pipe closed
            self._take(self.rr("events", "tail", "--since-seq", str(self._next()), "--no-follow", "--json").stdout.splitlines())
            self._follow(self._next())
        while True:
            try:
                self._take([self._lines.get_nowait()])
            except queue.Empty:
                return self.records

    def _next(self) -> int:
        return self.records[-1][0] + 1 if self.records else 1

    def _take(self, lines: list[str]) -> None:
        for line in lines:
            row = json.loads(line)
            if int(row["seq"]) >= self._next():  # a follower started again may repeat what was read before it
                self.records.append((int(row["seq"]), decode(json.dumps(row["event"]).encode())))

    def _follow(self, start: int) -> None:
        argv = [sys.executable, "-m", "cli.main", "events", "tail", "--since-seq", str(start), "--json"]
        self._follower = follower = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                                     env=operator_env(self.plan))
        self._reader = threading.Thread(target=_lines_into, args=(follower, self._lines), daemon=True)
        self._reader.start()

    def close(self) -> None:
        """End the follower."""
        self._stop()

    def _stop(self) -> None:
        if self._follower is None:
            return
        if self._follower.poll() is None:
            self._follower.terminate()
            self._follower.wait(timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=30)  # it ends at the pipe's end
        if self._follower.stdout is not None:
            self._follower.stdout.close()
        self._follower = None
        while not self._lines.empty():
            self._take([self._lines.get_nowait()])

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
    """The session's one fleet: 3 NATS hosts and 3 worker hosts (w-3 behind NAT), the services' loop blocker armed,
    the scheduler lease `LEASE` and the gate `GATE`.

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
                      "--workload", json.dumps(TEST_WORKLOAD), timeout=UP_TIMEOUT_S + 60)
        log = FleetLog(plan_of(root))
        try:
            yield log
        finally:
            log.close()
