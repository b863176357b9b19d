"""A simulated fleet node for scheduler fault tests: an agent's heartbeats plus a worker that answers assignments.

python -m tests.procs.sim_node --nats URL --node NAME [--beat-every S] [--hang] [--work-s S]

It beats like services/agent (so the membership leader declares it online, and offline once
it is killed), and answers each WORK_ASSIGNED for its node with WORK_STARTED, then, after
--work-s, WORK_COMPLETED; with --hang it starts its jobs and never finishes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from eventbus.connection import Bus, connect
from eventbus.errors import InvalidEvent
from eventbus.events import WorkAssigned, WorkCompleted, WorkStarted, utcnow
from eventbus.follow import follow
from eventbus.heartbeats import Heartbeat, publish_heartbeat
from eventbus.history import Record
from eventbus.integrity import decode_on
from eventbus.publisher import Publisher
from eventbus.subjects import type_filter


async def beat(bus: Bus, node: str, every: float) -> None:
    """Heartbeats until cancelled."""
    started = utcnow()
    seq = 0
    while True:
        seq += 1
        beat = Heartbeat(node=node, ts=utcnow(), seq=seq, interval_s=every, roles=["mixed"], started=started)
        with contextlib.suppress(Exception):
            await publish_heartbeat(bus, beat)
        await asyncio.sleep(every)


async def work(bus: Bus, node: str, hang: bool, work_s: float) -> None:
    """Answer this node's assignments until cancelled."""
    pub = Publisher(bus)
    jobs: asyncio.Queue[WorkAssigned] = asyncio.Queue()

    def on_record(record: Record) -> None:
        try:
            event = decode_on(record.subject, record.data, record.headers)
        except InvalidEvent:
            return  # poison in the log is not this node's job
        if isinstance(event, WorkAssigned) and event.node == node:
            jobs.put_nowait(event)

    follower = asyncio.ensure_future(follow(bus, on_record, subject=type_filter("WORK_ASSIGNED"), start_seq=1))
    try:
        while True:
            job = await jobs.get()
            await pub.publish(WorkStarted(work_id=job.work_id, node=node, attempt=job.attempt))
            if hang:
                continue
            await asyncio.sleep(work_s)
            await pub.publish(WorkCompleted(work_id=job.work_id, node=node, attempt=job.attempt))
    finally:
        follower.cancel()


async def main() -> None:
    """Run as asked until killed."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--nats", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--beat-every", type=float, default=0.2)
    ap.add_argument("--hang", action="store_true")
    ap.add_argument("--work-s", type=float, default=0.0)
    args = ap.parse_args()
    bus = await connect(args.nats, node_id=args.node)
    try:
        await asyncio.gather(beat(bus, args.node, args.beat_every), work(bus, args.node, args.hang, args.work_s))
    finally:
        await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
