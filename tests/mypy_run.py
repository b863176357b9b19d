"""mypy over the whole tree as a child process, started when the session collects its test so that it runs beside the others.

A cold run (CI's clean checkout has no cache) costs about 17 s of one core and minutes under load, while most tests
wait on servers and processes: started at collection, it is done, or nearly, by the time its test asks for the result.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_NAME = "test_mypy_finds_nothing"
RUN_KEY = pytest.StashKey["MypyRun"]()


class MypyRun:
    """One `python -m mypy` in the repository root (files and settings from [tool.mypy] in pyproject.toml)."""

    def __init__(self) -> None:
        # Its report goes to a file, not a pipe: a pipe nobody reads until the test would block it once full.
        self._out = tempfile.TemporaryFile()
        self._proc = subprocess.Popen([sys.executable, "-m", "mypy"], cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT)

    def result(self, timeout: float) -> tuple[int, str]:
        """Wait for it: (exit status, its report)."""
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        self._out.seek(0)
        return code, self._out.read().decode(errors="replace")

    def stop(self) -> None:
        """Kill it if it still runs (the session ended without asking for the result)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._out.close()


def start_if_collected(session: pytest.Session) -> None:
    """Start the type check now when the session will run its test (not for --collect-only)."""
    if session.config.option.collectonly:
        return
    if any(item.name == TEST_NAME and item.path.name == "test_static_checks.py" for item in session.items):
        session.config.stash[RUN_KEY] = MypyRun()


def stop(session: pytest.Session) -> None:
    """Kill a run whose result nobody asked for (an interrupted session, `-x` after a failure)."""
    run = session.config.stash.get(RUN_KEY, None)
    if run is not None:
        run.stop()


def result(config: pytest.Config, timeout: float) -> tuple[int, str]:
    """The run started at collection, or a run started now (the test called some other way): (exit status, report)."""
    run = config.stash.get(RUN_KEY, None) or MypyRun()
    config.stash[RUN_KEY] = run
    return run.result(timeout)
