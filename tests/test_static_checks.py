"""The linter and the type checker pass on the whole tree, so CI (`.ci/run`) runs them with the tests.

ruff's rules and mypy's settings (strict on the pure cores) live in pyproject.toml; a failure
prints the tool's own report, which names each file, line and rule.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import background_runs

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    done = _run("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert done.returncode == 0, f"ruff check . found problems (fix them, or `ruff check --fix .`):\n{done.stdout}{done.stderr}"


@pytest.mark.timeout(600)  # a cold run from a clean checkout takes ~17 s of CPU time, minutes of wall time under load
def test_mypy_finds_nothing(request: pytest.FixtureRequest) -> None:
    # A background run (tests/background_runs.py): in a whole session it ran beside the tests before this one;
    # files, strictness and the cache dir come from [tool.mypy] in pyproject.toml.
    code, report = background_runs.result(request.config, "mypy", timeout=590)
    assert code == 0, f"mypy found type errors:\n{report}"
