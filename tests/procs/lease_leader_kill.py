"""kill -9 of the server leading RR_EVENTS and the lease bucket while the scheduler leader is connected to it, on a
3-server cluster with three scheduler candidates as OS processes: a report for tests/test_leader_liveness.py.

Usage: python -m tests.procs.lease_leader_kill
On its own cluster (random loopback ports, stores in a temporary directory) it waits for a leader running every loop,
moves both streams' leaders to that leader's server, has an item assigned, kills that server, waits for a leader whose
every loop runs again in a renewal written after the kill, has a second item assigned, then SIGTERMs the leader; it
prints one JSON line, a `KillReport`, with what the test judges. Most of its time is JetStream re-establishing the log's
source of the lease bucket (README "Verified against the lease"), little CPU, so the session runs it beside the tests
before that one (tests/background_runs.py). A wait that times out fails the run with its traceback and the candidates'
logs.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import msgspec

from eventbus.connection import Bus, connect
from eventbus.events import LeaderElected, WorkAdded, WorkAssigned
from eventbus.leases import LeaseBucket, LeaseRecord
from eventbus.natsserver import NatsCluster
from eventbus.publisher import Publisher
from eventbus.streams import StreamSettings, provision
from tests.helpers import eventually
from tests.procs.cluster_report import report_on_cluster
from tests.procs.leader_fleet import Fleet
from tests.scheduler_harness import online, read_log

TTL = 3
SOURCE_RESUME_S = 120  # JetStream re-establishing the log's source of the lease bucket after a server loss
LEASES = "KV_rr_leases"
GRACE_S = 10.0  # run_service's default grace
# Waits with no bound of the README's behind them, that end as soon as they hold: candidate processes starting and a
# leader running every loop, a stream's leader moving, an item being assigned. A loaded 2-core machine takes tens of seconds.
STARTUP_S = 90
ACT_S = 60


def write_config(path: Path) -> Path:
    path.write_text(
        "streams:\n  replicas: 3\n"
        f"leadership:\n  ttl_s: {TTL}\n"
        "membership:\n  heartbeat_interval_s: 60\n"  # the test's nodes never beat: keep them online
        "scheduler:\n  populator_enabled: false\npipeline:\n  enabled: false\n"
    )
    return path


async def lease(bus: Bus) -> LeaseRecord | None:
    try:
        return await LeaseBucket(bus, "rr_leases").read("scheduler", timeout=2.0)
    except Exception:  # noqa: BLE001 -- the bucket's stream is electing a leader: ask again
        return None


async def leading_with_all_loops(bus: Bus, since: float | None = None) -> LeaseRecord | None:
    """The lease when its holder reports every loop running (in a renewal written after `since`, when given)."""
    record = await lease(bus)
    if record is None or record.holder is None or not record.holder.loops:
        return None
    if any(state != "running" for state in record.holder.loops.values()):
        return None
    if since is not None and (record.written_at is None or record.written_at.timestamp() < since):
        return None
    return record


async def stream_leader_on(bus: Bus, cluster: NatsCluster, stream: str, server: int) -> None:
    """Move a stream's leader to `server` (a step-down asking for it as the preferred leader)."""
    name = cluster.servers[server].spec.name

    async def there() -> bool:
        try:
            info = await bus.js.stream_info(stream)
        except Exception:  # noqa: BLE001 -- mid-election
            return False
        if info.cluster is not None and info.cluster.leader == name:
            return True
        request = msgspec.json.encode({"placement": {"preferred": name}})
        try:
            await bus.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=5)
        except Exception:  # noqa: BLE001 -- retried
            pass
        return False

    await eventually(there, timeout=STARTUP_S, interval=0.5, message=f"{stream} leader on {name}")


def server_of(cluster: NatsCluster, log_text: str) -> int:
    """The cluster server a service connected to, from its "started on node X via URL" line."""
    url = log_text.split(" via ", 1)[1].split()[0]
    return next(i for i, u in enumerate(cluster.urls) if u.rstrip("/") == url.rstrip("/"))


async def assigned(bus: Bus, work_id: str) -> bool:
    return any(isinstance(e, WorkAssigned) and e.work_id == work_id for e in await read_log(bus))


class KillReport(msgspec.Struct, frozen=True, kw_only=True):
    """What happened around the kill, for the test to judge; `logs` is the candidates' output, for its messages."""

    loops: list[str]  # the first leader's loops, all running
    first: tuple[str, int]  # holder, epoch before the kill
    healthy: tuple[str, int]  # holder, epoch with every loop running again after it
    elections_after_kill: list[tuple[str, int]]
    recovered_s: float
    terminate_code: int | None  # the healthy leader's exit on SIGTERM
    terminate_s: float
    logs: str


async def kill_under_the_leader(cluster: NatsCluster, tmp: Path) -> KillReport:
    config = write_config(tmp / "rr.yaml")
    bus = await connect(cluster.urls, node_id="observer")
    try:
        await provision(bus.js, StreamSettings(replicas=3))
        await online(Publisher(bus), "n1", "n2")
        with Fleet(",".join(cluster.urls), ["a", "b", "c"], config, tmp) as fleet:
            first = await eventually(lambda: leading_with_all_loops(bus), timeout=STARTUP_S, interval=0.2,
                                     message=f"a leader with every loop running\n{fleet.logs()}")
            assert first.holder is not None
            # The server the leader is connected to, made the lease bucket's stream leader too.
            victim = server_of(cluster, fleet[first.holder.node].log_text())
            await bus.close()
            bus = await connect([u for i, u in enumerate(cluster.urls) if i != victim], node_id="observer")
            pub = Publisher(bus)
            for stream in (LEASES, "RR_EVENTS"):  # the hardest server to lose: the log's and the leases' leader
                await stream_leader_on(bus, cluster, stream, victim)
            await pub.publish(WorkAdded(work_id="before", work_type="selfplay", board_type="hex8", num_players=2))
            await eventually(lambda: assigned(bus, "before"), timeout=ACT_S, interval=0.2, message=fleet.logs())

            before_kill = len(await read_log(bus))
            killed_at = time.time()
            await asyncio.to_thread(cluster.kill, victim)
            healthy = await eventually(lambda: leading_with_all_loops(bus, since=killed_at + 0.5), timeout=240, interval=0.2,
                                       message=f"every loop running again after the kill\n{fleet.logs()}")
            recovered_s = time.time() - killed_at
            assert healthy.holder is not None
            # The leader's loops can be back before the observer's first read of the log is answered: a consumer's
            # creation went unanswered for its whole timeout once, the log's leader still moving under load.
            # Readable again is what is asked here, not readable at once.
            log_after = await eventually(lambda: read_log(bus), timeout=ACT_S, interval=0.5, message="the log read after the kill")
            elections = [(e.node, e.epoch) for e in log_after[before_kill:] if isinstance(e, LeaderElected)]
            await pub.publish(WorkAdded(work_id="after", work_type="selfplay", board_type="hex8", num_players=2))
            await eventually(lambda: assigned(bus, "after"), timeout=ACT_S, interval=0.2, message=fleet.logs())

            started = time.monotonic()
            code = await asyncio.to_thread(fleet[healthy.holder.node].terminate, GRACE_S + 5)
            return KillReport(loops=sorted(first.holder.loops), first=(first.holder.node, first.epoch),
                              healthy=(healthy.holder.node, healthy.epoch), elections_after_kill=elections,
                              recovered_s=recovered_s, terminate_code=code, terminate_s=time.monotonic() - started,
                              logs=fleet.logs())
    finally:
        await bus.close()


if __name__ == "__main__":
    sys.exit(report_on_cluster("rr-lease-leader-kill-", kill_under_the_leader))
