"""Process groups on this host, through psutil and signals. Every function here blocks: call it in a thread.

A job runs in its own session, so its process group id is the pid of the process the worker
started, and every child it forks stays in that group unless it starts a session itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Collection

import psutil

# create_time is read from /proc in clock ticks; two reads of one process agree to well under this.
CREATE_TIME_TOLERANCE_S = 0.05


def create_time(pid: int) -> float | None:
    """When a process started (epoch seconds), or None when it is gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_same_process(pid: int, started: float) -> bool:
    """Whether `pid` is still the process that started at `started` (not gone, not a reused pid, not a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(float(process.create_time()) - started) < CREATE_TIME_TOLERANCE_S
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def group_members(pgid: int, since: float) -> list[int]:
    """Live pids in process group `pgid` started at or after `since` (older ones cannot be the job's)."""
    members = []
    for process in psutil.process_iter(["pid", "create_time", "status"]):
        info = process.info
        if info["status"] == psutil.STATUS_ZOMBIE or (info["create_time"] or 0) < since - CREATE_TIME_TOLERANCE_S:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(info["pid"]) == pgid:
                members.append(info["pid"])
    return members


def count_in_groups(pgids: Collection[int]) -> int:
    """Live, non-zombie processes in any of these process groups: a node's job processes, children included."""
    if not pgids:
        return 0
    count = 0
    for process in psutil.process_iter(["pid", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            count += os.getpgid(process.info["pid"]) in pgids
    return count


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to a whole process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
