"""Restarts lose no work: Ctrl-C of `rr up` while jobs run, then `rr up` again, on real processes.

The worker hands its running attempts back (WORK_HANDED_BACK, not a failed attempt), the new
leader re-assigns them, they complete, and nobody is declared offline by silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from cluster.membership.core import LEFT
from eventbus.connection import Bus
from eventbus.events import Event, HostOffline, WorkAdded, WorkAttemptFailed, WorkCompleted, WorkHandedBack, WorkStarted
from eventbus.history import Record, replay
from eventbus.integrity import decode_on
from eventbus.publisher import Publisher
from tests.helpers import eventually
from tests.up_harness import wait_bus

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ITEMS = ("w-r1", "w-r2")
NODE = "lap-r"

# Jobs that run ~8 s printing progress, then exit 0 (no result line: WORK_COMPLETED alone).
CONFIG = """
scheduler: {populator_enabled: false}
pipeline: {enabled: false}
worker:
  templates:
    selfplay: "{python} -m tests.procs.worker_child --pids {output_dir}/pids --progress 80 --progress-every 0.1"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def rr_up(data: Path, config: Path, port: int) -> AsyncIterator[Bus]:
    """`rr up` on its own ports and data dir, stopped with SIGINT (a Ctrl-C) at the end; yields a client."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RR_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "up", "--grace", "15", "--nats-port", str(port),
        "--api-port", str(_free_port()), "--data-dir", str(data), "--node-id", NODE, "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=env, cwd=PROJECT_ROOT,
    )
    bus: Bus | None = None
    try:
        bus = await wait_bus(port)
        yield bus
    finally:
        if bus is not None:
            await bus.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()


async def _events(bus: Bus) -> list[tuple[int, Event]]:
    records: list[Record] = []
    await replay(bus, records.append)
    return [(r.seq, decode_on(r.subject, r.data, r.headers)) for r in records]


def _of(events: list[tuple[int, Event]], kind: type[Event]) -> list[tuple[int, Event]]:
    return [(seq, e) for seq, e in events if isinstance(e, kind)]


async def test_ctrl_c_and_up_again_while_jobs_run_costs_no_attempt_and_declares_nobody_offline(tmp_path: Path) -> None:
    data, config, port = tmp_path / "data", tmp_path / "rr.yaml", _free_port()
    config.write_text(CONFIG)
    async with rr_up(data, config, port) as bus:
        publisher = Publisher(bus)
        for work_id in ITEMS:
            await publisher.publish(WorkAdded(work_id=work_id, work_type="selfplay", board_type="hex8", num_players=2, num_games=1))

        async def both_running() -> bool:
            return {e.work_id for _, e in _of(await _events(bus), WorkStarted)} == set(ITEMS)  # type: ignore[attr-defined]

        await eventually(both_running, timeout=90, interval=0.2, message="both jobs started")
    # rr up has stopped (SIGINT) while both jobs ran; start it again on the same data dir.
    async with rr_up(data, config, port) as bus:
        restarted_at = (await _events(bus))[-1][0]

        async def both_completed() -> list[tuple[int, Event]] | None:
            events = await _events(bus)
            done = {e.work_id for _, e in _of(events, WorkCompleted)}  # type: ignore[attr-defined]
            return events if done == set(ITEMS) else None

        events = await eventually(both_completed, timeout=120, interval=0.2, message="both items completed after the restart")
    handed = [e for _, e in _of(events, WorkHandedBack)]
    assert {(e.work_id, e.attempt) for e in handed} >= {(w, 1) for w in ITEMS}  # type: ignore[attr-defined]
    assert _of(events, WorkAttemptFailed) == [], "a restart consumes no attempt"
    offline = _of(events, HostOffline)
    assert [e for seq, e in offline if seq > restarted_at] == [], "no HOST_OFFLINE after the restart"
    assert all(e.reason == LEFT for _, e in offline), "only the node's own goodbye, never a silence"  # type: ignore[attr-defined]
