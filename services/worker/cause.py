"""A failed job's cause in one line, pure: the last exception line of its stderr.

Python prints a traceback and ends it with the exception (`ModuleNotFoundError: No module named
'numpy'`); chained exceptions print several, and the last one is what ended the job. A job that
is not Python, or whose tail lost the traceback's head, gets the last line that names an error,
else its last non-empty line.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MAX_CAUSE = 300  # characters: one line in an event, a table cell, a sentence
TRACEBACK = "Traceback (most recent call last):"
# `Name: message` or a bare `Name` where the name (dotted or not) ends like an exception class.
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning|Group)(?::.*)?$")
_MARGIN = re.compile(r"^\s*(?:[|+]-*\s?)+(?=\S)")
_ERRORISH = re.compile(r"\b(?:error|fatal|failed|cannot|can't|no such)\b", re.IGNORECASE)


def cause_of(stderr: str) -> str:
    """The one line that says why a job failed, '' when its stderr says nothing."""
    # An exception group prints its members behind `| ` and `+-` margins: read past them.
    lines = [_MARGIN.sub("", line.rstrip()) for line in stderr.splitlines()]
    return _clip(_after_traceback(lines) or _last_matching(lines, _EXCEPTION.match)
                 or _last_matching(lines, _ERRORISH.search) or next((x.strip() for x in reversed(lines) if x.strip()), ""))


def _after_traceback(lines: list[str]) -> str:
    # The first unindented line after the last traceback header is its exception.
    starts = [i for i, line in enumerate(lines) if line.strip() == TRACEBACK]
    if not starts or starts[-1] == len(lines) - 1:
        return ""
    return next((line for line in lines[starts[-1] + 1:] if line and not line[0].isspace()), "")


def _last_matching(lines: list[str], test: Callable[[str], object]) -> str:
    return next((line.strip() for line in reversed(lines) if line.strip() and test(line.strip())), "")


def _clip(line: str) -> str:
    return line if len(line) <= MAX_CAUSE else line[: MAX_CAUSE - 3] + "..."
