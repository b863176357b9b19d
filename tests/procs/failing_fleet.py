"""A fleet whose every job fails, for one measured minute under the documented default backoffs: its events as a report.

Usage: python -m tests.procs.failing_fleet
Starts its own nats-server (random loopback port, store in a temporary directory), two simulated nodes whose every job
fails at once, the scheduler's assignment loop and populator, all at their defaults; after a minute of wall time it
prints one JSON line, a `MinuteReport`: the seconds measured and every event written since the nodes came online.
tests/test_scheduler_backoff.py judges it against the README's first-minute bound; the session runs it beside the
tests before that one (tests/background_runs.py), so the minute costs the session no wall time.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from config.sections.scheduler import SchedulerSettings
from config.settings import RrConfig
from eventbus.events import HostOnline, encode
from eventbus.history import last_sequence
from eventbus.natsserver import NatsServer, ServerSpec, free_port
from eventbus.publisher import Publisher
from services.leader.assigner import assignment_loop
from services.leader.populator import populator_loop
from tests.bus_harness import provisioned_bus
from tests.helpers import TEST_STORE_LIMIT
from tests.leader_harness import leader_loop_running
from tests.procs.stoppable import cancelled_by_sigterm
from tests.scheduler_harness import read_log, simulated_worker
from tests.terms import as_term

WINDOW_S = 60.0  # the README's bound is per first minute
NODES = ("vm", "vm2")


class MinuteReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the measured window wrote: its length and its events (each as the wire's JSON), in log order."""

    elapsed_s: float
    events: list[msgspec.Raw]


async def measure(url: str) -> MinuteReport:
    """Two nodes, instant failures, the documented default backoffs, for WINDOW_S."""
    async with provisioned_bus(url, node_id="vm") as bus:
        pub = Publisher(bus)
        workers = [asyncio.create_task(simulated_worker(bus, node, lambda job: "fail")) for node in NODES]
        for node in NODES:
            await as_term(pub, HostOnline(node=node))
        start_seq = await last_sequence(bus)
        config = RrConfig(scheduler=SchedulerSettings())
        try:
            async with leader_loop_running(bus, assignment_loop, config):
                async with leader_loop_running(bus, populator_loop, config, announce=False):
                    started = time.monotonic()
                    await asyncio.sleep(WINDOW_S)  # the measured window itself, not a wait for a condition
                    elapsed = time.monotonic() - started
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        log = (await read_log(bus))[start_seq:]
    return MinuteReport(elapsed_s=elapsed, events=[msgspec.Raw(encode(e)) for e in log])


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="rr-failing-fleet-") as tmp:
        spec = ServerSpec(name="rr-failing-fleet", port=free_port(), store_dir=str(Path(tmp) / "jetstream"),
                          max_file_store=TEST_STORE_LIMIT)
        with NatsServer(spec) as server:
            report = asyncio.run(cancelled_by_sigterm(measure(server.url)))
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
