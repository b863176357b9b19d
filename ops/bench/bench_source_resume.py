"""How long the log copies no lease write after the server leading the lease bucket dies: the source's own retry against
a nudge.

A new scheduler term is announced only once RR_EVENTS holds the server's copy of its acquiring lease write (README,
"Verified against the lease"), so while RR_EVENTS' source of KV_rr_leases copies nothing, no candidate can take office.
Each round starts a fresh 3-server cluster on loopback, writes the lease every ~0.5 s, kill -9's the server leading
KV_rr_leases, restarts it DOWN_S later (the chaos smoke's kill_stream_leader) and times, from the kill, the first write
whose copy lands in the log.

left:    nothing else is done: the server re-creates the source's consumer on its own retry schedule.
nudge:   2 s after the restart, RR_EVENTS' stream leader is asked to step down ($JS.API.STREAM.LEADER.STEPDOWN, an
         admin's request): a new stream leader sets its sources up afresh.
elector: each write after the kill is awaited as an elector awaits its acquisition's copy (cluster/leadership/copywait.py,
         5 s), which asks for the step-down itself where the source is stalled (cluster/leadership/sourcenudge.py).
Every round first lets RR_EVENTS' leader hold office MIN_LEADER_TENURE_S (the elector does not unseat a newer one).
ratio = median(left) / median(elector); nudge_ratio = median(left) / median(nudge).
--cost: what a step-down costs a running fleet instead: a publisher appends to RR_EVENTS back to back, RR_EVENTS' leader
is asked to step down, and the longest publish (send to ack) after it is set against the longest before it.
Run: python -m ops.bench.bench_source_resume [--rounds 3] [--down 4.5] [--sides left,elector] [--cost]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from cluster.leadership.copywait import COPY_WAIT_MAX_S, CopyWait
from cluster.leadership.sourcenudge import MIN_LEADER_TENURE_S
from eventbus.connection import Bus, connect
from eventbus.errors import BusError, ConcurrencyConflict
from eventbus.events import WorkAdded, utcnow
from eventbus.history import last_on
from eventbus.leasecopy import copy_subject, origin_of
from eventbus.leases import LeaseBucket, LeaseValue
from eventbus.natsserver import NatsCluster
from eventbus.publisher import Publisher
from eventbus.sourcestall import source_status, step_down_leader
from eventbus.streams import EVENTS_STREAM, StreamSettings, provision
from ops.bench.common import emit, log, server_version

T = TypeVar("T")
ROLE = "scheduler"
GIVE_UP_S = 150.0  # a round whose copies have not come back by then reports None
ROUND_LIMIT_S = GIVE_UP_S + 90  # the whole round, its cluster's start, set-up and stop included
NUDGE_AFTER_S = 2.0  # after the restart
SIDES = ("left", "nudge", "elector")
PLACEMENTS = ("any", "apart", "together")  # the lease bucket's leader against RR_EVENTS' leader, at the kill
PLACEMENT_TRIES = 20
COST_BEFORE_S, COST_AFTER_S = 3.0, 8.0  # the cost's publishing before and after the step-down


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
        await step_down_leader(bus, EVENTS_STREAM, timeout=2.0)
    except BusError as exc:  # the round's figure shows whether it helped
        log(f"step-down of {EVENTS_STREAM}: {exc}")


async def events_leader_settled(bus: Bus, bucket_stream: str) -> None:
    """Until RR_EVENTS' leader has held office MIN_LEADER_TENURE_S, as on a fleet that has run a while."""
    while True:
        status = await source_status(bus, EVENTS_STREAM, bucket_stream, timeout=2.0)
        if status is not None and (status.leader_tenure_s or 0) >= MIN_LEADER_TENURE_S + 1:
            return
        await asyncio.sleep(0.5)


async def place_leaders(bus: Bus, bucket_stream: str, placement: str) -> None:
    """Step RR_EVENTS' leader down until it is (`together`) or is not (`apart`) KV_rr_leases' leader; `any`: as it is.
    RR_EVENTS' and not the bucket's: a new RR_EVENTS leader sets its source up at once, while a bucket leader's change
    stalls the source (the very fault measured here) before the round begins."""
    for _ in range(PLACEMENT_TRIES):
        together = await leader_of(bus, bucket_stream) == await leader_of(bus, EVENTS_STREAM)
        if placement == "any" or together == (placement == "together"):
            return
        with contextlib.suppress(BusError):
            await step_down_leader(bus, EVENTS_STREAM, timeout=2.0)
        await asyncio.sleep(1.0)
    log(f"the leaders are not {placement} after {PLACEMENT_TRIES} step-downs: measured as they are")


async def copies_again_after(cluster: NatsCluster, bus: Bus, side: str, down_s: float,
                             placement: str) -> tuple[float | None, bool]:
    """Seconds from the kill of the lease bucket's leader to the first write copied after its restart, and whether
    that server also led RR_EVENTS."""
    writer = LeaseWriter(bus)
    await writer.bucket.ensure()
    await place_leaders(bus, writer.bucket.stream, placement)
    await events_leader_settled(bus, writer.bucket.stream)
    first = await writer.write()
    while await writer.copied() != first:
        await asyncio.sleep(0.1)
    copies = CopyWait(bus, ROLE, "bench", writer.bucket.stream, COPY_WAIT_MAX_S, 1.0)
    victim_name = await leader_of(bus, writer.bucket.stream)
    led_both = victim_name == await leader_of(bus, EVENTS_STREAM)
    victim = next(i for i, s in enumerate(cluster.servers) if s.spec.name == victim_name)
    killed = time.monotonic()
    await asyncio.to_thread(cluster.kill, victim)
    async with asyncio.TaskGroup() as tasks:
        # Restarted on time whatever the writer waits for (the elector side waits up to 5 s per write).
        restart = tasks.create_task(restart_after(cluster, victim, down_s))
        seconds = await first_copy_after(writer, copies, restart, first, side, killed)
    return seconds, led_both


async def restart_after(cluster: NatsCluster, victim: int, down_s: float) -> float:
    """Restart the killed server `down_s` after its kill; the monotonic time it was up again."""
    await asyncio.sleep(down_s)
    await asyncio.to_thread(cluster.restart, victim)
    return time.monotonic()


async def first_copy_after(writer: LeaseWriter, copies: CopyWait, restart: asyncio.Task[float], first: int, side: str,
                           killed: float) -> float | None:
    """Seconds from the kill to the first write after the restart whose copy landed in the log; None past GIVE_UP_S."""
    nudged = side != "nudge"
    while time.monotonic() - killed < GIVE_UP_S:
        if restart.done() and not nudged and time.monotonic() - restart.result() >= NUDGE_AFTER_S:
            await step_down_events(writer.bus)
            nudged = True
        written = await writer.write()
        if side == "elector" and written > first:
            await copies.logged(written, lambda: True)  # asks for the step-down where the source is stalled
        else:
            await asyncio.sleep(0.5)
        if restart.done() and written > first and (await writer.copied() or 0) >= written:
            return time.monotonic() - killed
    return None


async def in_cluster(work: Callable[[NatsCluster, Bus], Awaitable[T]]) -> T:
    """`work` on a fresh 3-server cluster with the streams provisioned R3."""
    with tempfile.TemporaryDirectory(prefix="rr-bench-source-") as tmp:
        cluster = NatsCluster.create(Path(tmp) / "cluster", size=3)
        await asyncio.to_thread(cluster.start)
        try:
            bus = await connect(cluster.urls, node_id="bench-source")
            try:
                await provision(bus.js, StreamSettings(replicas=3))
                return await work(cluster, bus)
            finally:
                await bus.close()
        finally:
            await asyncio.to_thread(cluster.stop)


def median_of(seconds: list[float | None]) -> float | None:
    known = [s for s in seconds if s is not None]
    return statistics.median(known) if known else None


def ratio(figures: dict[str, list[float | None]], side: str) -> float | None:
    left, other = median_of(figures["left"]), median_of(figures.get(side, []))
    return round(left / other, 2) if left and other else None


async def run(rounds: int, down_s: float, sides: tuple[str, ...], placement: str) -> None:
    figures: dict[str, list[float | None]] = {side: [] for side in sides}
    led_both: dict[str, list[bool]] = {side: [] for side in sides}
    for i in range(rounds):
        for side in (sides if i % 2 == 0 else sides[::-1]):
            try:
                async with asyncio.timeout(ROUND_LIMIT_S):
                    seconds, both = await in_cluster(
                        functools.partial(copies_again_after, side=side, down_s=down_s, placement=placement))
            except TimeoutError:
                log(f"round {i + 1} {side}: no figure within {ROUND_LIMIT_S:.0f} s (the cluster's start or set-up hung)")
                seconds, both = None, False
            figures[side].append(None if seconds is None else round(seconds, 1))
            led_both[side].append(both)
            log(f"round {i + 1} {side}: copies again {seconds} s after the kill (the victim led RR_EVENTS too: {both})")
    emit({"bench": "source_resume", "down_s": down_s, "rounds": rounds, "placement": placement, **{f"{side}_s": figures[side] for side in sides},
          "victim_led_events_too": led_both, "ratio": ratio(figures, "elector"), "nudge_ratio": ratio(figures, "nudge"),
          "nats_server": server_version()})


async def longest_publishes(bus: Bus) -> tuple[float, float]:
    """The longest publish (send to ack) of a publisher appending back to back, before and after a step-down of
    RR_EVENTS' leader."""
    publisher, longest, stepped_at, n = Publisher(bus), [0.0, 0.0], 0.0, 0
    started = time.monotonic()
    while (now := time.monotonic()) - started < COST_BEFORE_S + COST_AFTER_S:
        if not stepped_at and now - started >= COST_BEFORE_S:
            await step_down_events(bus)
            stepped_at = time.monotonic()
        sent = time.monotonic()
        await publisher.publish(WorkAdded(work_id=f"w-{n}", work_type="selfplay", board_type="hex8", num_players=2))
        n += 1
        after = 1 if stepped_at else 0
        longest[after] = max(longest[after], time.monotonic() - sent)
    return longest[0], longest[1]


async def cost(rounds: int) -> None:
    before: list[float] = []
    after: list[float] = []
    for i in range(rounds):
        b, a = await in_cluster(lambda _cluster, bus: longest_publishes(bus))
        before.append(round(b, 3))
        after.append(round(a, 3))
        log(f"round {i + 1}: longest publish {b:.3f} s before the step-down, {a:.3f} s after")
    emit({"bench": "source_resume_stepdown_cost", "rounds": rounds, "longest_publish_before_s": before,
          "longest_publish_after_s": after, "ratio": round(statistics.median(after) / statistics.median(before), 1),
          "nats_server": server_version()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side, alternating which goes first")
    parser.add_argument("--down", type=float, default=4.5, help="seconds the killed server stays down")
    parser.add_argument("--sides", default="left,elector", help=f"comma-separated, 'left' first, of {', '.join(SIDES)}")
    parser.add_argument("--placement", choices=PLACEMENTS, default="any",
                        help="the lease bucket's leader apart from RR_EVENTS' leader, on the same server, or as it is")
    parser.add_argument("--cost", action="store_true", help="measure what a step-down costs a publisher instead")
    args = parser.parse_args()
    sides = tuple(args.sides.split(","))
    if sides[0] != "left" or not set(sides) <= set(SIDES):
        parser.error(f"--sides: 'left' first, then any of {SIDES[1:]}")
    asyncio.run(cost(args.rounds) if args.cost else run(args.rounds, args.down, sides, args.placement))


if __name__ == "__main__":
    main()
