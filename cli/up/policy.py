"""Pure decisions of the supervisor: how long to wait before restarting a child, and how to describe its exit."""

from __future__ import annotations

import signal

import msgspec


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff between restarts, reset once a child has stayed up long enough."""

    base_s: float = 0.5
    factor: float = 2.0
    cap_s: float = 30.0
    stable_after_s: float = 60.0  # a child up this long is healthy again: its next crash starts from base_s


class ChildHistory(msgspec.Struct, frozen=True, kw_only=True):
    """What the supervisor remembers of one child between runs."""

    crashes_in_a_row: int = 0
    restarts: int = 0


def after_exit(policy: RestartPolicy, history: ChildHistory, uptime_s: float) -> tuple[ChildHistory, float]:
    """The child's history after an unexpected exit, and how many seconds to wait before starting it again."""
    in_a_row = 1 if uptime_s >= policy.stable_after_s else history.crashes_in_a_row + 1
    delay = min(policy.cap_s, policy.base_s * policy.factor ** (in_a_row - 1))
    return ChildHistory(crashes_in_a_row=in_a_row, restarts=history.restarts + 1), delay


def describe_exit(returncode: int) -> str:
    """'exited with code 1' or 'was killed by SIGKILL' (asyncio reports a signal as a negative code)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"
