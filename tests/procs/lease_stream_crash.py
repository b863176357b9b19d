"""kill -9 of the nats-server leading the lease bucket's stream, of three, while scheduler candidates decide: a report
for tests/test_failover.py.

Usage: python -m tests.procs.lease_stream_crash
On its own 3-server cluster (random loopback ports, stores in a temporary directory) it runs three candidates with the
default lease TTL and a simulated node working through queued items, kills the server leading KV_rr_leases once a
leader acts, publishes 20 probes, waits for 10 decisions after them, and prints one JSON line, a `CrashReport`: the log
and the epochs the candidates announced, for the test to judge. Most of its time is JetStream re-establishing the log's
source of the lease bucket (README "Verified against the lease"), little CPU, so the session runs it beside the tests
before that one (tests/background_runs.py). A wait that times out fails the run with its traceback.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec

from config.sections.leadership import LeadershipSettings
from eventbus.connection import connect
from eventbus.events import AnyEvent, ConfigChanged
from eventbus.natsserver import NatsCluster
from eventbus.publisher import Publisher
from eventbus.streams import StreamSettings, provision
from tests.helpers import eventually
from tests.procs.cluster_report import report_on_cluster
from tests.procs.leader_fleet import Fleet, write_config


class CrashReport(msgspec.Struct, frozen=True, kw_only=True):
    """The whole log after the crash's decisions, how much of it came before the kill, the probes' acked ids and the
    epochs whose LEADER_ELECTED the candidates logged as acked."""

    log: list[AnyEvent]
    before_kill: int
    acked: list[str]
    announced: list[int]
    bucket_replicas: int


async def crash(cluster: NatsCluster, tmp: Path) -> CrashReport:
    # The failover tests' helpers, imported here: that module imports this one's report.
    from tests.test_failover import SOURCE_RESUME_S, _announced_epochs, _decided_after_probes, keep_deciding, read_log, settled_leader
    from tests.test_scheduler_faults import SimNodes

    # The default lease TTL: a 2 s lease leaves too little room for JetStream's own re-election of
    # the bucket's stream leader on a loaded 2-core machine.
    ttl = LeadershipSettings().lease_ttl_s
    config = write_config(tmp / "rr.yaml", ttl_s=ttl, replicas=3)
    bus = await connect(cluster.urls, node_id="observer")
    nodes = SimNodes(",".join(cluster.urls), tmp)
    try:
        await provision(bus.js, StreamSettings(replicas=3))
        await keep_deciding(Publisher(bus), nodes)
        with Fleet(",".join(cluster.urls), ["a", "b", "c"], config, tmp) as fleet:
            await settled_leader(bus, fleet, eventually)
            info = await bus.js.stream_info("KV_rr_leases")
            assert info.cluster is not None and info.cluster.leader is not None
            # The hardest node to lose: the one leading the lease bucket's stream.
            victim = next(i for i, s in enumerate(cluster.servers) if s.spec.name == info.cluster.leader)
            probes = Publisher(bus)
            # Count elections from the kill on: on a loaded machine the settled leader may already
            # have handed over before it, which is not the crash's doing.
            before_kill = len(await read_log(bus))
            await asyncio.to_thread(cluster.kill, victim)
            acked = [(await probes.publish(ConfigChanged(name="probe", path=str(i)))).event.id for i in range(20)]
            # A leader that lost its lease in the crash waits, before announcing a new term, for
            # JetStream to re-establish the log's source of the lease bucket (README, "Verified
            # against the lease": 9-46 s measured, longer under load), as tests/test_leader_liveness.py allows.
            await eventually(lambda: _decided_after_probes(bus, 10), timeout=2 * ttl + 6 + SOURCE_RESUME_S,
                             interval=0.2, message=f"a leader acts again after the crash\n{fleet.logs()}")
            return CrashReport(log=await read_log(bus), before_kill=before_kill, acked=acked,
                               announced=sorted(_announced_epochs(fleet)), bucket_replicas=info.config.num_replicas or 0)
    finally:
        nodes.kill_all()
        await bus.close()


if __name__ == "__main__":
    sys.exit(report_on_cluster("rr-lease-stream-crash-", crash))
