"""A failed job's cause in one line: the last exception line of its stderr, from real Python tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eventbus.events import WorkAdded, WorkAttemptFailed
from services.worker.cause import MAX_CAUSE, cause_of
from services.worker.jobs import JobOutcome
from services.worker.protocol import AttemptKey
from services.worker.results import outcome_events


def stderr_of(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stderr


@pytest.mark.parametrize(("code", "cause"), [
    ("import numpy_not_installed", "ModuleNotFoundError: No module named 'numpy_not_installed'"),
    ("import runpy; runpy.run_module('no_such_module_here', run_name='__main__')",
     "ImportError: No module named no_such_module_here"),
    ("try:\n  {}['k']\nexcept KeyError as e:\n  raise RuntimeError('wrapped') from e", "RuntimeError: wrapped"),
    ("raise ExceptionGroup('g', [ValueError('one'), TypeError('two')])", "TypeError: two"),
    ("raise ValueError('first line\\nsecond line')", "ValueError: first line"),
    ("import sys; sys.exit('a plain message')", "a plain message"),
])
def test_the_cause_is_the_exception_line_that_ended_the_job(code: str, cause: str) -> None:
    assert cause_of(stderr_of(code)) == cause


def test_without_a_traceback_the_last_line_naming_an_error_else_the_last_line() -> None:
    assert cause_of("  File \"x.py\", line 3\n    boom()\nOSError: [Errno 28] No space left on device\n") == \
        "OSError: [Errno 28] No space left on device"  # the traceback's head fell out of the tail
    assert cause_of("compiling\nmake: *** [all] Error 2\ncleaning up\n") == "make: *** [all] Error 2"
    assert cause_of("warming up\nsegfault at 0x0\n\n") == "segfault at 0x0"
    assert cause_of("") == ""
    assert len(cause_of("RuntimeError: " + "x" * 1000)) == MAX_CAUSE


def test_a_failed_attempt_carries_its_cause_and_the_whole_tail() -> None:
    tail = stderr_of("import numpy_not_installed")
    item = WorkAdded(work_id="w", work_type="selfplay", board_type="hex8", num_players=2)
    outcome = JobOutcome(exit_code=1, stop_reason=None, stderr_tail=tail)
    [failed] = outcome_events(item, AttemptKey("w", 1), "n1", outcome, [])
    assert isinstance(failed, WorkAttemptFailed)
    assert (failed.reason, failed.cause) == ("exited with status 1", "ModuleNotFoundError: No module named 'numpy_not_installed'")
    assert failed.stderr_tail == tail
    # an event written before the field existed decodes with no cause
    assert WorkAttemptFailed(work_id="w", node="n", attempt=1, reason="r").cause == ""
