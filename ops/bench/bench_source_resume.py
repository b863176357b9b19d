"""How long the log copies no lease write after the server leading the lease bucket dies: the source's own retry against
a nudge.

A new scheduler term is announced only once RR_EVENTS holds the server's copy of its acquiring lease write (README,
"Verified against the lease"), so while RR_EVENTS' source of KV_rr_leases copies nothing, no candidate can take office.
Each round starts a fresh 3-server cluster on loopback, writes the lease every ~0.5 s, kill -9's the server leading
KV_rr_leases, restarts it DOWN_S later (the chaos smoke's kill_stream_leader) and times, from the kill, the first write
whose copy lands in the log.

left:  nothing else is done: the server re-creates the source's consumer on its own retry schedule.
nudge: 2 s after the restart, RR_EVENTS' stream leader is asked to step down ($JS.API.STREAM.LEADER.STEPDOWN, an
       admin's request): a new stream leader sets its sources up afresh.
ratio = median(left) / median(nudge). Run: python -m ops.bench.bench_source_resume [--rounds 3] [--down 4.5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from eventbus.connection import Bus, connect
from eventbus.errors import BusError, ConcurrencyConflict
from eventbus.events import utcnow
from eventbus.history import last_on
from eventbus.leasecopy import copy_subject, origin_of
from eventbus.leases import LeaseBucket, LeaseValue
from eventbus.natsserver import NatsCluster
from eventbus.streams import EVENTS_STREAM, StreamSettings, provision
from ops.bench.common import emit, log, server_version

ROLE = "scheduler"
GIVE_UP_S = 150.0  # a round whose copies have not come back by then reports None
NUDGE_AFTER_S = 2.0  # after the restart


class LeaseWriter:
    """Writes the role's lease (compare-and-set, like an acquisition) and reads the revision of its newest copy."""

    def __init__(self, bus: Bus) -> None:
        self.bus, self.bucket, self.revision = bus, LeaseBucket(bus, replicas=3), 0

    async def write(self) -> int:
        """The revision of the newest write this writer knows of, after trying one more."""
        value = LeaseValue(node="bench", incarnation="bench", epoch=0, ttl_s=20, acquired_at=utcnow())
        try:
            self.revision = await self.bucket.acquire(ROLE, value, expect_revision=self.revision, timeout=1.0)
        except ConcurrencyConflict:
            self.revision = (await self.bucket.read(ROLE)).revision
        except BusError:
            pass  # no quorum yet: the next try tells
        return self.revision

    async def copied(self) -> int | None:
        """The lease revision the log's newest copy stands for; None when it cannot be read now."""
        try:
            last = await last_on(self.bus, copy_subject(ROLE), timeout=1.0)
        except BusError:
            return None
        origin = origin_of(last.headers) if last is not None else None
        return origin.revision if origin is not None else None


async def leader_of(bus: Bus, stream: str) -> str:
    info = await bus.js.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader is not None
    return info.cluster.leader


async def step_down_events(bus: Bus) -> None:
    try:
        await bus.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{EVENTS_STREAM}", b"", timeout=2.0)
    except Exception as exc:  # noqa: BLE001 - the round's figure shows whether it helped
        log(f"step-down of {EVENTS_STREAM}: {type(exc).__name__}")


async def copies_again_after(cluster: NatsCluster, bus: Bus, nudge: bool, down_s: float) -> tuple[float | None, bool]:
    """Seconds from the kill of the lease bucket's leader to the first write copied after its restart, and whether
    that server also led RR_EVENTS."""
    writer = LeaseWriter(bus)
    await writer.bucket.ensure()
    first = await writer.write()
    while await writer.copied() != first:
        await asyncio.sleep(0.1)
    victim_name = await leader_of(bus, writer.bucket.stream)
    led_both = victim_name == await leader_of(bus, EVENTS_STREAM)
    victim = next(i for i, s in enumerate(cluster.servers) if s.spec.name == victim_name)
    killed = time.monotonic()
    await asyncio.to_thread(cluster.kill, victim)
    restarted: float | None = None
    nudged = not nudge
    while (now := time.monotonic()) - killed < GIVE_UP_S:
        if restarted is None and now - killed >= down_s:
            await asyncio.to_thread(cluster.restart, victim)
            restarted = time.monotonic()
        elif restarted is not None and not nudged and now - restarted >= NUDGE_AFTER_S:
            await step_down_events(bus)
            nudged = True
        written = await writer.write()
        await asyncio.sleep(0.5)
        if restarted is not None and written > first and (await writer.copied() or 0) >= written:
            return time.monotonic() - killed, led_both
    return None, led_both


async def one_round(nudge: bool, down_s: float) -> tuple[float | None, bool]:
    with tempfile.TemporaryDirectory(prefix="rr-bench-source-") as tmp:
        cluster = NatsCluster.create(Path(tmp) / "cluster", size=3)
        await asyncio.to_thread(cluster.start)
        try:
            bus = await connect(cluster.urls, node_id="bench-source")
            try:
                await provision(bus.js, StreamSettings(replicas=3))
                return await copies_again_after(cluster, bus, nudge, down_s)
            finally:
                await bus.close()
        finally:
            await asyncio.to_thread(cluster.stop)


def median_of(seconds: list[float | None]) -> float | None:
    known = [s for s in seconds if s is not None]
    return statistics.median(known) if known else None


async def run(rounds: int, down_s: float) -> None:
    figures: dict[str, list[float | None]] = {"left": [], "nudge": []}
    led_both: dict[str, list[bool]] = {"left": [], "nudge": []}
    for i in range(rounds):
        for side in (("left", "nudge") if i % 2 == 0 else ("nudge", "left")):
            seconds, both = await one_round(side == "nudge", down_s)
            figures[side].append(None if seconds is None else round(seconds, 1))
            led_both[side].append(both)
            log(f"round {i + 1} {side}: copies again {seconds} s after the kill (the victim led RR_EVENTS too: {both})")
    left, nudged = median_of(figures["left"]), median_of(figures["nudge"])
    emit({"bench": "source_resume", "down_s": down_s, "rounds": rounds, "left_s": figures["left"],
          "nudge_s": figures["nudge"], "victim_led_events_too": led_both,
          "ratio": round(left / nudged, 2) if left and nudged else None, "nats_server": server_version()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side, alternating which goes first")
    parser.add_argument("--down", type=float, default=4.5, help="seconds the killed server stays down")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.down))


if __name__ == "__main__":
    main()
