"""The fleet's state file, <fleet root>/fleet.json: the plan and every process started, written before each step.

`down` trusts it only as a list of what may exist: every namespace, link and process is looked
up again (by name prefix and `ip netns pids`), so a crash between two writes leaves nothing behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from ops.fleet.plan import FleetError, FleetPlan

STATE_FILE = "fleet.json"


class Process(msgspec.Struct, frozen=True, kw_only=True):
    """One process the fleet started in a host's namespace."""

    host: str
    name: str  # nats-server, or the rr service's name
    pid: int
    log: str


class FleetState(msgspec.Struct, frozen=True, kw_only=True):
    """What `up` made, as far as it got."""

    plan: FleetPlan
    processes: tuple[Process, ...] = ()
    ready: bool = False


def state_path(root: Path) -> Path:
    """<root>/fleet.json."""
    return root / STATE_FILE


def save(root: Path, state: FleetState) -> None:
    """Write the state atomically (blocking)."""
    root.mkdir(parents=True, exist_ok=True)
    temp = state_path(root).with_suffix(".tmp")
    temp.write_bytes(msgspec.json.format(msgspec.json.encode(state)))
    os.replace(temp, state_path(root))


def load(root: Path) -> FleetState | None:
    """The state in `root`, None when there is none; FleetError naming the file when it is unreadable."""
    path = state_path(root)
    try:
        return msgspec.json.decode(path.read_bytes(), type=FleetState)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:
        raise FleetError(f"{path}: unreadable ({exc}); remove the fleet with `python -m ops.fleet down --run-id ID`") from None
