"""Fuzzing the log: arbitrary and hostile events of every type appended to a real stream never stop the fleet.

Each example appends a batch from tests/event_fuzz.py (valid events with arbitrary values,
bodies that break their schema, bodies under another type's subject, oversized and deeply
nested JSON, junk, and elections that candidates announce for themselves with made-up epochs)
to the log a real scheduler process and a simulated node are following.
Then a valid item pinned to the node must still be assigned and completed, both processes must
still run, and every reading command must answer (exit 0, no traceback). The log only grows, so
later examples meet all the poison of earlier ones, as a restarted service would.
The budget is fixed (derandomized, EXAMPLES batches) so CI runs it in well under two minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cli import main as cli
from eventbus.connection import connect
from eventbus.events import WorkAdded, WorkCompleted
from eventbus.history import events
from eventbus.publisher import Publisher
from eventbus.subjects import aggregate_filter
from tests.bus_harness import provisioned_bus
from tests.event_fuzz import forged_elections, hostile_payloads, valid_payloads
from tests.helpers import eventually
from tests.procs.leader_fleet import ROOT, Fleet

pytestmark = pytest.mark.timeout(300)

EXAMPLES = int(os.environ.get("RR_FUZZ_EXAMPLES", "12"))  # more for a longer local run
NODE = "fz-worker"
COMMANDS = (["work", "list"], ["nodes"], ["models"], ["status"], ["events", "tail", "--no-follow"], ["timeline"],
            ["leader"], ["data"])
# The fleet's candidate announcing itself with made-up epochs, and the fuzzer's nodes too (no candidates
# are configured, so any node's own election is judged by its epoch alone: the lease copies decide).
FORGED_ELECTIONS = forged_elections(("s1", "fz-a", "fz-b"))
CONFIG = ("leadership:\n  ttl_s: 2\nmembership:\n  heartbeat_interval_s: 0.5\n  missed_beats_offline: 20\n"
          "scheduler:\n  populator_enabled: false\npipeline:\n  enabled: false\n")


async def _append(url: str, batch: list[tuple[str, bytes]]) -> None:
    bus = await connect(url, node_id="fuzzer")
    try:
        for subject, body in batch:
            # An oversized body is refused by the stream or the client: that is the point of the bound.
            with contextlib.suppress(nats.js.errors.APIError, nats.errors.MaxPayloadError):
                await bus.js.publish(subject, body, timeout=5)
    finally:
        await bus.close()


async def _provision(url: str) -> None:
    async with provisioned_bus(url):
        pass


async def _add_and_wait_completed(url: str, work_id: str) -> None:
    bus = await connect(url, node_id="fuzzer")
    try:
        await Publisher(bus).publish(WorkAdded(work_id=work_id, work_type="selfplay", board_type="hex8", num_players=2,
                                               num_games=1, target_node=NODE))

        async def completed() -> bool:
            found = [e async for _s, e in events(bus, subject=aggregate_filter("work", work_id))]
            return any(isinstance(e, WorkCompleted) for e in found)

        await eventually(completed, timeout=30, interval=0.1, message=f"{work_id} completed after the fuzzed batch")
    finally:
        await bus.close()


def _command(url: str, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main([*argv, "--nats", url])
    return code, out.getvalue()


@pytest.fixture
def sim_node(nats_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    log = open(tmp_path / "sim-node.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "tests.procs.sim_node", "--nats", nats_url, "--node", NODE,
                             "--beat-every", "0.2"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


def test_arbitrary_and_hostile_events_never_stop_scheduling_or_the_commands(
        nats_url: str, tmp_path: Path, sim_node: subprocess.Popen[bytes]) -> None:
    config = tmp_path / "rr.yaml"
    config.write_text(CONFIG)
    counter = iter(range(10**6))
    asyncio.run(_provision(nats_url))
    with Fleet(nats_url, ["s1"], config, tmp_path) as fleet:
        asyncio.run(_add_and_wait_completed(nats_url, "fz-warmup"))  # the node is online and scheduling works

        # No shrinking: the log only grows, so a smaller batch replayed later meets all earlier poison too,
        # and the batch that broke things first is the one to report.
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(st.one_of(hostile_payloads(forge=False), valid_payloads(forge=False), FORGED_ELECTIONS),
                        min_size=1, max_size=12))
        def one_batch(batch: list[tuple[str, bytes]]) -> None:
            asyncio.run(_append(nats_url, batch))
            try:
                asyncio.run(_add_and_wait_completed(nats_url, f"fz-item-{next(counter)}"))
            except AssertionError as exc:
                queue = _command(nats_url, ["work", "list"])[1]
                raise AssertionError(f"{exc}\nqueue:\n{queue[-3000:]}\nscheduler log:\n{fleet.logs()[-3000:]}") from None
            assert fleet["s1"].running, fleet.logs()
            assert sim_node.poll() is None, "the simulated node died"
            for argv in COMMANDS:
                code, output = _command(nats_url, argv)
                assert code == 0 and "Traceback" not in output, (argv, code, output[-2000:])

        one_batch()
        logs = fleet.logs()
    assert "Traceback" not in logs, logs[-4000:]
