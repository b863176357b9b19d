"""The whole loop through `rr up`: real nats-server, every service as its own process, the reference workload.

A fresh data dir and a tiny configuration: the populator queues selfplay, the pipeline trains
once enough samples exist, evaluates the candidate against random play and promotes it past the
gate, and the distributor installs it under the seeds' names. Nothing is faked on the way.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from eventbus.connection import Bus, connect
from eventbus.events import EvaluationComplete, Event, ModelDistributed, ModelPromoted, WorkCompleted
from eventbus.history import events
from services.distributor.layout import canonical_path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

TINY = """\
scheduler:
  populator_games: 10
  backlog_per_node: 1
  curriculum: {square8_2p: 1.0, hex8_2p: 0.0}
pipeline:
  min_new_samples: 500
  evaluation_games: 10
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _log(bus: Bus) -> list[Event]:
    return [e async for _seq, e in events(bus) if isinstance(e, Event)]


async def _until(bus: Bus, done, timeout: float) -> list[Event]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        log = await _log(bus)
        if done(log):
            return log
        if asyncio.get_running_loop().time() > deadline:
            kinds = sorted({e.type_name() for e in log})
            raise AssertionError(f"not within {timeout:g} s; {len(log)} events of types {kinds}")
        await asyncio.sleep(1.0)


@pytest.mark.timeout(420)
async def test_rr_up_runs_selfplay_training_evaluation_promotion_and_distribution_by_itself(tmp_path: Path) -> None:
    config, data = tmp_path / "rr.yaml", tmp_path / "data"
    config.write_text(TINY)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RR_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), RR_NODE_ID="solo")
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "up", "--grace", "5", "--nats-port", str(port), "--data-dir", str(data),
        "--api-port", str(_free_port()), "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=env, cwd=tmp_path,
    )
    try:
        bus = None
        for _ in range(100):  # the embedded server takes a moment to listen
            try:
                bus = await connect(f"nats://127.0.0.1:{port}", node_id="observer", initial_attempts=1)
                break
            except Exception:
                await asyncio.sleep(0.3)
        assert bus is not None, "rr up's nats-server never answered"
        try:
            def distributed(log: list[Event]) -> bool:
                promoted = {e.model_id for e in log if isinstance(e, ModelPromoted)}
                return any(isinstance(e, ModelDistributed) and e.model_id in promoted for e in log)

            log = await _until(bus, distributed, timeout=360)
        finally:
            await bus.close()
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGINT)
        _out, err = await asyncio.wait_for(up.communicate(), 60)
    assert up.returncode == 0, err.decode()[-2000:]

    promoted = next(e for e in log if isinstance(e, ModelPromoted))
    assert (promoted.board_type, promoted.num_players, promoted.generation) == ("square8", 2, 1)
    assert promoted.epoch is not None  # a leader's decision, fenced
    # The gate: the SPRT showed the first generation stronger than the pure-search anchor at equal simulations.
    gate = next(e for e in log if isinstance(e, EvaluationComplete) and e.model_id == promoted.model_id and e.gate)
    assert (gate.opponent, gate.verdict) == ("square8_2p-search16", "H1") and "SPRT accepted H1" in promoted.reason
    completed = {e.work_id for e in log if isinstance(e, WorkCompleted)}
    assert any(w.startswith("selfplay") for w in completed) and any(w.startswith("train") for w in completed)
    # Installed under the seeds' name, byte for byte what was promoted.
    installed = canonical_path(data / "models", "square8", 2)
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == promoted.sha256
    assert (data / "models" / "ringrift_best_square8_2p.pth").resolve() == installed.resolve()
