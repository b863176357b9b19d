"""The chaos client: adds work at a steady rate and records every WORK_ADDED the cluster acknowledged.

Each record is one JSON line {"id": event id, "seq": stream sequence}, written (and flushed) the
moment the ack arrives, so what the checker is given is exactly what a client was promised.
Most items are `synthetic` (a job that sleeps, ops/fleet/files.py) so the mix runs on 2 cores; the
leader's populator keeps the real selfplay workload going beside them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import msgspec

from eventbus.connection import Bus
from eventbus.errors import BusError
from eventbus.events import WorkAdded
from eventbus.publisher import Publisher
from ops.chaos.checker import ClientRecord

PRIORITY = 1000  # an explicit priority outranks the populator's selfplay: synthetic items go first


class ClientStats(msgspec.Struct, frozen=True, kw_only=True):
    """What the client tried and what was acknowledged."""

    tried: int
    acknowledged: int
    refused: int


def work_item(run: str, number: int, seconds: float) -> WorkAdded:
    """The client's `number`th item of a run (pure): its id names the run, so two runs on one fleet never share one."""
    return WorkAdded(work_id=f"chaos-{run}-{number}", work_type="synthetic", board_type="hex8", num_players=2,
                     priority=PRIORITY, params={"seconds": seconds}, requested_by="chaos-client")


def _append(path: Path, line: bytes) -> None:
    with open(path, "ab") as out:
        out.write(line)


async def add_work(bus: Bus, records: Path, *, seed: int, rate_per_s: float, stop: asyncio.Event,
                   seconds: float = 1.0) -> ClientStats:
    """Add items every 1/rate seconds until `stop`; an add that gets no ack within 10 s is not recorded."""
    publisher = Publisher(bus, ack_timeout=3.0, retry_for=10.0)
    run = f"{seed}-{secrets.token_hex(2)}"
    tried = acked = 0
    next_at = time.monotonic()
    while not stop.is_set():
        tried += 1
        try:
            published = await asyncio.wait_for(publisher.publish(work_item(run, tried, seconds)), 15.0)
        except (BusError, TimeoutError):
            published = None  # not acknowledged: the checker expects nothing of it
        if published is not None:
            acked += 1
            line = msgspec.json.encode(ClientRecord(id=published.event.id, seq=published.seq)) + b"\n"
            await asyncio.to_thread(_append, records, line)
        next_at += 1.0 / rate_per_s
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
        except TimeoutError:
            pass
    return ClientStats(tried=tried, acknowledged=acked, refused=tried - acked)
