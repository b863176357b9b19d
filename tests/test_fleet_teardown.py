"""A killed test session leaves nothing of what its fixtures started: no nats-server, namespace, link or fleet process.

Marked `fleet` (root, iproute2); skipped in one line where network namespaces cannot be made. A child pytest
(tests/procs/fleet_holder.py) holds a nats-server and a fleet-like tree as the fleet tests do; it is killed as
timeout(1) or a cancelled job kills it (SIGTERM: its fixtures' teardown runs, tests/termination.py) and as nothing
can intercept (SIGKILL: the fleet's guard takes the fleet down, tests/fleet_harness.py `fleet_guarded`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from ops.fleet.launch import alive
from tests.fleet_harness import fleet_cmd, leftovers, new_run_id, skip_without_namespaces
from tests.procs.fleet_holder import HOLDING, ROOT_ENV, RUN_ID_ENV, Holding

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent


def holding(root: Path, child: subprocess.Popen[bytes], out: Path) -> Holding:
    """What the child session holds, once it holds it all."""
    deadline = time.monotonic() + 180
    while not (root / HOLDING).exists():
        assert child.poll() is None, f"the holding session exited {child.returncode}: {out.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the holding session never held its fleet: {out.read_text()[-3000:]}"
        time.sleep(0.2)  # pacing of a file poll
    return msgspec.json.decode((root / HOLDING).read_bytes(), type=Holding)


def gone_within(timeout: float, run_id: str, root: Path, server_pid: int) -> list[str]:
    """What is still left of the session after up to `timeout` seconds (empty as soon as nothing is)."""
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(run_id, root) + ([f"nats-server pid {server_pid}"] if alive(server_pid) else [])
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)  # pacing of a poll of /proc and `ip`


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_killed_test_session_leaves_no_server_namespace_link_or_fleet_process(sig: signal.Signals, tmp_path: Path) -> None:
    skip_without_namespaces()
    run_id, root, out = new_run_id(), tmp_path / "fleet", tmp_path / "session.out"
    env = {**os.environ, ROOT_ENV: str(root), RUN_ID_ENV: run_id}
    with open(out, "wb") as sink:
        child = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/procs/fleet_holder.py"],
                                 cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        held = holding(root, child, out)
        assert len(leftovers(run_id, root)) >= len(held.fleet_pids) and alive(held.nats_server_pid), "nothing held: the test proves nothing"
        child.send_signal(sig)
        code = child.wait(timeout=240)
        if sig == signal.SIGTERM:
            # Unwound as an interrupt, its teardown done before it exited: nothing is left the moment it is gone.
            assert code == pytest.ExitCode.INTERRUPTED, f"exit {code}: {out.read_text()[-3000:]}"
            assert gone_within(0, run_id, root, held.nats_server_pid) == [], out.read_text()[-3000:]
        else:
            # Nothing ran in the killed session: its fleet's guard takes the fleet down (the nats-server is a fixture's
            # own, in a session of its own: SIGKILL orphans it, which only a teardown could prevent).
            os.kill(held.nats_server_pid, signal.SIGKILL)
            assert gone_within(120, run_id, root, held.nats_server_pid) == [], (root / "guard.log").read_text()[-3000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        fleet_cmd(root, "down", "--run-id", run_id, check=False)
        end_server_left(root)


def end_server_left(root: Path) -> None:
    """SIGKILL the child session's nats-server if a failed case left it running (it is in a session of its own)."""
    if not (root / HOLDING).exists():
        return
    pid = msgspec.json.decode((root / HOLDING).read_bytes(), type=Holding).nats_server_pid
    with contextlib.suppress(OSError):
        if alive(pid) and b"nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
