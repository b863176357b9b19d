"""A scheduler leader is elected within seconds after the server leading the lease bucket dies, on a real 3-server
cluster: RR_EVENTS' source of the bucket stalls then (no copy of any lease write lands for 10-46 s on its own,
ops/bench/README.md), and the candidate holding the lease asks RR_EVENTS' leader to step down so that a new one sets
the source up (cluster/leadership/sourcenudge.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from cluster.leadership.election import Elector
from cluster.leadership.sourcenudge import MIN_LEADER_TENURE_S
from cluster.leadership.term import Term
from eventbus.connection import Bus, connect
from eventbus.errors import BusError
from eventbus.events import utcnow
from eventbus.history import last_on
from eventbus.leases import LeaseBucket, LeaseValue
from eventbus.natsserver import NatsCluster
from eventbus.sourcestall import source_status, step_down_leader
from eventbus.streams import EVENTS_STREAM, StreamSettings, provision
from eventbus.subjects import election_filter

pytestmark = pytest.mark.timeout(240)

TTL_S = 15.0  # copy wait min(TTL, 5 s) = 5 s and the first renewal at 5 s, as a fleet's 20 s TTL gives 5 s and 4 s
DOWN_S = 4.5  # the chaos smoke's kill_stream_leader keeps the server down this long
OLD_LEADER = LeaseValue(node="old", incarnation="old", ttl_s=2, acquired_at=utcnow())
# From the kill: 8.0-13.6 s measured with the step-down (load 9-16); 18.7 s twice without, and up to 46 s where the
# source waits its own retries. A generous bound: what fails the old code is that RR_EVENTS got no new leader.
ELECTED_WITHIN_S = 40.0


async def leader_of(bus: Bus, stream: str) -> str | None:
    info = await bus.js.stream_info(stream)
    return info.cluster.leader if info.cluster is not None else None


async def leader_since(bus: Bus, stream: str) -> object:
    info = await bus.js.stream_info(stream)
    return info.cluster.leader_since if info.cluster is not None else None


async def lease_bucket_led_apart(bus: Bus) -> str:
    """The server leading KV_rr_leases, once it is not RR_EVENTS' leader (the kill then stalls the source, and RR_EVENTS'
    leader stays in office). RR_EVENTS' leader is the one stepped down: its successor sets the source up at once."""
    bucket = LeaseBucket(bus, replicas=3)
    for _ in range(20):
        kv_leader = await leader_of(bus, bucket.stream)
        if kv_leader is not None and kv_leader != await leader_of(bus, EVENTS_STREAM):
            return kv_leader
        with contextlib.suppress(BusError):
            await step_down_leader(bus, EVENTS_STREAM, timeout=2.0)
        await asyncio.sleep(1.0)
    raise AssertionError("KV_rr_leases kept its leader on RR_EVENTS' leader's server")


async def elected(bus: Bus) -> bool:
    return await last_on(bus, election_filter("scheduler"), timeout=1.0) is not None


async def lead(term: Term) -> None:
    await asyncio.Event().wait()  # the leader's work: nothing, until the term ends


async def test_a_candidate_is_elected_within_seconds_after_the_lease_buckets_server_is_killed(
    nats_cluster: NatsCluster, eventually: Any
) -> None:
    bus = await connect(nats_cluster.urls, node_id="observer")
    candidate = await connect(nats_cluster.urls, node_id="n1")
    stopping = asyncio.Event()
    try:
        await provision(bus.js, StreamSettings(replicas=3))
        await LeaseBucket(bus, replicas=3).ensure()
        victim_name = await lease_bucket_led_apart(bus)
        # A stream leader of less tenure is left to set its sources up itself: let RR_EVENTS' leader settle first.
        await eventually(lambda: settled(bus), timeout=3 * MIN_LEADER_TENURE_S, interval=0.5)
        victim = next(i for i, s in enumerate(nats_cluster.servers) if s.spec.name == victim_name)
        # A leader that stopped: its lease runs out after the kill, and the candidate campaigns then.
        await LeaseBucket(bus, replicas=3).acquire("scheduler", OLD_LEADER, expect_revision=0, timeout=2.0)
        elector = Elector(candidate, "scheduler", "n1", TTL_S, replicas=3)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(elector.run(lead, stopping))
            await eventually(lambda: elector.statistics().leader == "old", timeout=10.0)  # watching the lease
            events_leader_since = await leader_since(bus, EVENTS_STREAM)
            killed = time.monotonic()
            await asyncio.to_thread(nats_cluster.kill, victim)
            await asyncio.sleep(DOWN_S)
            await asyncio.to_thread(nats_cluster.restart, victim)
            await eventually(lambda: elected(bus), timeout=ELECTED_WITHIN_S + 60, interval=0.2)
            took = time.monotonic() - killed
            stopping.set()
        print(f"LEADER_ELECTED {took:.1f} s after the kill of {victim_name} (terms won: {elector.statistics().terms_won})")
        # The victim led only the bucket: RR_EVENTS' leader takes office again only because the candidate asked.
        assert await leader_since(bus, EVENTS_STREAM) != events_leader_since, "RR_EVENTS' leader was never stepped down"
        assert took < ELECTED_WITHIN_S
    finally:
        stopping.set()
        await candidate.close()
        await bus.close()


async def settled(bus: Bus) -> bool:
    status = await source_status(bus, EVENTS_STREAM, LeaseBucket(bus).stream, timeout=1.0)
    return status is not None and (status.leader_tenure_s or 0) >= MIN_LEADER_TENURE_S + 2
