"""Child processes that a test only reads the result of, started while the session runs the tests before it.

A cold mypy costs about 17 s of one core and minutes under load while most tests wait on servers and processes, and so
do the known-strength tournament (tests/procs/known_strength_tournament.py, about 20 s of one core) and the two
schemathesis runs against a live API (tests/procs/api_contract_fuzz.py, about a minute); the kills of a server
under the lease (tests/procs/lease_leader_kill.py, tests/procs/lease_stream_crash.py), the failing fleet's measured minute (tests/procs/failing_fleet.py)
and the 40 s quorum loss (tests/procs/quiet_faults.py) are wall time with little CPU. Run beside the tests before
theirs, each is done, or nearly, by the time its test asks for the result, instead of adding its time to the session's.

They run one at a time, in RUNS order, so that the session never carries more than one of them beside its own test
(a 2-core machine: the tests beside them keep their timing): the first starts when the session has collected its test,
each next one when the session starts a test after the previous one ended. A test asking for a run not yet started
starts it at once. tests/conftest.py runs the tests that read a report after every other test (the fleet's aside), so
each run has the whole session to pass beside, wherever its test's file sorts.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

Test = tuple[str, str]  # file, function
# name -> (the tests that read it, the command, run in the repository root), in the order they run: those whose tests
# come first in the session's file order first (tests/conftest.py runs the readers themselves last).
RUNS: dict[str, tuple[tuple[Test, ...], list[str]]] = {
    "api_contract_fuzz": ((("test_api_contract.py", "test_schemathesis_finds_no_server_error_and_no_answer_off_the_contract"),
                           ("test_api_contract.py", "test_schemathesis_explores_the_leadership_and_admin_endpoints_past_their_403_"
                                                    "with_an_admin_token")),
                          [sys.executable, "-m", "tests.procs.api_contract_fuzz"]),
    "lease_stream_crash": ((("test_failover.py", "test_killing_one_nats_server_of_three_causes_at_most_one_election_and_loses_no_event"),),
                           [sys.executable, "-m", "tests.procs.lease_stream_crash"]),
    "lease_leader_kill": ((("test_leader_liveness.py", "test_killing_the_lease_leaders_server_under_the_leader_leaves_a_leader_"
                                                       "whose_every_loop_runs"),),
                          [sys.executable, "-m", "tests.procs.lease_leader_kill"]),
    "quiet_faults": ((("test_quiet_faults.py", "test_a_40s_quorum_loss_writes_a_bounded_number_of_lines_per_process"),),
                     [sys.executable, "-m", "tests.procs.quiet_faults"]),
    "failing_fleet": ((("test_scheduler_backoff.py", "test_a_fleet_whose_every_job_fails_stays_under_the_stated_event_rate"),),
                      [sys.executable, "-m", "tests.procs.failing_fleet"]),
    # files, strictness and the cache dir come from [tool.mypy] in pyproject.toml
    "mypy": ((("test_static_checks.py", "test_mypy_finds_nothing"),), [sys.executable, "-m", "mypy"]),
    "tournament": ((("test_workload_tournament.py", "test_tournament_ratings_order_three_nets_of_known_strength"),),
                   [sys.executable, "-m", "tests.procs.known_strength_tournament"]),
}
STARTED = pytest.StashKey[dict[str, "BackgroundRun"]]()
PENDING = pytest.StashKey[list[str]]()


class BackgroundRun:
    """One command as a child process in the repository root, its output kept for whoever asks."""

    def __init__(self, argv: list[str]) -> None:
        # Its output goes to a file, not a pipe: a pipe nobody reads until the test would block it once full.
        self._out = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(argv, cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT)

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def result(self, timeout: float) -> tuple[int, str]:
        """Wait for it: (exit status, its output)."""
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        self._out.seek(0)
        return code, self._out.read().decode(errors="replace")

    def stop(self) -> None:
        """End it if it still runs (the session ended without asking for the result): SIGTERM, then SIGKILL."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(60)  # a child stops what it started on SIGTERM: the quorum loss's services take ~20 s
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._out.close()


def reads_a_run(test: Test) -> bool:
    """Whether a test reads a run's report: tests/conftest.py runs those after every other test (the fleet's aside)."""
    return any(test in readers for readers, _ in RUNS.values())


def code_of(test: Test) -> str:
    """What the background run a test reads executes, for the tier reading (tests/conftest.py): the source of its
    tests.procs module, or the command line of another program; "" for a test that reads none."""
    argv = next((argv for readers, argv in RUNS.values() if test in readers), None)
    if argv is None:
        return ""
    if argv[1:2] == ["-m"] and argv[2].startswith("tests.procs."):
        return "tests.procs\n" + inspect.getsource(importlib.import_module(argv[2]))
    return "subprocess " + " ".join(argv)


def queue_collected(session: pytest.Session) -> None:
    """Queue each run whose test the session will run (none for --collect-only), and start the first."""
    if session.config.option.collectonly:
        return
    collected = {(item.path.name, item.name) for item in session.items}
    session.config.stash[PENDING] = [name for name, (readers, _) in RUNS.items() if collected.intersection(readers)]
    start_next(session.config)


def start_next(config: pytest.Config) -> None:
    """Start the next queued run when none runs (called as each test starts)."""
    started, pending = config.stash.setdefault(STARTED, {}), config.stash.get(PENDING, [])
    if pending and not any(run.running for run in started.values()):
        name = pending.pop(0)
        started[name] = BackgroundRun(RUNS[name][1])


def stop_all(session: pytest.Session) -> None:
    """End the runs whose results nobody asked for (an interrupted session, `-x` after a failure)."""
    for run in session.config.stash.get(STARTED, {}).values():
        run.stop()


def result(config: pytest.Config, name: str, timeout: float) -> tuple[int, str]:
    """Run `name`'s result: the run started beside earlier tests, or one started now (not reached yet, or its test
    called some other way)."""
    started, pending = config.stash.setdefault(STARTED, {}), config.stash.get(PENDING, [])
    if name not in started:
        if name in pending:
            pending.remove(name)
        started[name] = BackgroundRun(RUNS[name][1])
    return started[name].result(timeout)
