"""A test session holding what a fleet test holds, for tests/test_fleet_teardown.py to kill: run only as a child pytest.

`python -m pytest tests/procs/fleet_holder.py` (named on the command line: the suite does not collect it) with
RR_HOLDER_ROOT and RR_HOLDER_RUN_ID set. After a test whose event loop takes SIGTERM as a service's does, its second
test holds a nats-server (the `nats_server` fixture, in a session of its own) and a fleet-like tree
(tests/procs/fleet_like.py) under `fleet_guarded` (tests/fleet_harness.py), as `shared_fleet` holds its fleet;
it writes what it holds to <root>/holding.json, then waits to be killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from eventbus.natsserver import NatsServer
from ops.fleet.state import load
from tests.fleet_harness import fleet_guarded

ROOT_ENV, RUN_ID_ENV = "RR_HOLDER_ROOT", "RR_HOLDER_RUN_ID"
HOLDING = "holding.json"


class Holding(msgspec.Struct, frozen=True, kw_only=True):
    """What the session started, for its killer to look for afterwards."""

    nats_server_pid: int
    fleet_pids: list[int]


async def test_an_event_loop_takes_sigterm_first() -> None:
    # As a service run in a test's loop does (servicekit/runtime.py): closing, the loop sets SIGTERM's default action back.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: None)


@pytest.mark.timeout(600)
def test_holds_a_server_and_a_fleet_until_killed(nats_server: NatsServer) -> None:
    root, run_id = Path(os.environ[ROOT_ENV]), os.environ[RUN_ID_ENV]
    with fleet_guarded(root, run_id):
        subprocess.run([sys.executable, "-m", "tests.procs.fleet_like", str(root), run_id], check=True, timeout=120)
        state = load(root)
        assert state is not None and nats_server.pid is not None
        holding = Holding(nats_server_pid=nats_server.pid, fleet_pids=[p.pid for p in state.processes])
        (root / HOLDING).write_bytes(msgspec.json.encode(holding))
        time.sleep(540)  # held: the test that started this session kills it long before
