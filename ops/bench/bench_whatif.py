"""`rr whatif` over the last day of a long log: who was online at its start from the server's subject index, against read from the log's start.

ours:     the command's read (eventbus/directreads.last_per_subject: each membership subject's
          newest record before the window, one batched direct get), the window's records, the
          recording and the simulation of the recorded config (bench_forensics.whatif_window).
ceiling:  the same with the membership read from the log's start, as the command read it before
          (O(log): 156.9 s at 22M records). The ratio ours / ceiling is lower the better; the goal
          (issue #19) is ours <= 60 s at 22M records. Both must record the same window.
The log: --events of bench_projection's fleet mix, published once into --data-dir and served again
from there; or the log a server at --url already holds (read only: nothing is published or deleted).
Rounds alternate which side goes first.
Run: python -m ops.bench.bench_whatif --events 2000000 --data-dir /tmp/DIR [--rounds 3]
     python -m ops.bench.bench_whatif --url nats://127.0.0.1:PORT --rounds 1   (a kept year's log)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from eventbus.connection import Bus
from eventbus.history import last_sequence
from eventbus.streams import StreamSettings
from ops.bench.bench_forensics import WhatIfDay, last_day, whatif_window
from ops.bench.bench_projection import publish_log
from ops.bench.common import bench_bus, bench_server, common_arguments, emit, fresh_events_stream, kept_events_stream, log

GOAL_S = 60.0


@contextlib.asynccontextmanager
async def log_bus(url: str | None, events: int, data_dir: Path | None, api_timeout_s: float) -> AsyncIterator[Bus]:
    """A connection to the server at `url`, or to one started on `data_dir` holding `events` records (published if not kept)."""
    if url is not None:
        async with bench_bus(url, api_timeout_s) as bus:
            yield bus
        return
    async with bench_server(data_dir=data_dir) as server, bench_bus(server.url, api_timeout_s) as bus:
        if data_dir is None or not await kept_events_stream(bus, events, StreamSettings()):
            await fresh_events_stream(bus, StreamSettings())
            log(f"publishing {events:,} events ...")
            await publish_log(bus, events, chunk_size=5_000)  # an event's time stays within 5k records of its storage
        yield bus


async def sides(bus: Bus, rounds: int) -> dict[str, list[WhatIfDay]]:
    """Each side `rounds` times, alternating which goes first."""
    since, until = await last_day(bus, await last_sequence(bus))
    runs: dict[str, list[WhatIfDay]] = {"ours": [], "ceiling": []}
    for r in range(rounds):
        for name in (("ours", "ceiling") if r % 2 == 0 else ("ceiling", "ours")):
            day = await whatif_window(bus, since, until, from_start=name == "ceiling")
            runs[name].append(day)
            log(f"round {r + 1}/{rounds} {name}: {day.seconds:.2f}s (read {day.read_s:.2f}s), {day.membership}")
    return runs


def result(end: int, runs: dict[str, list[WhatIfDay]], load: list[str]) -> dict[str, Any]:
    """The result line: medians of each side, their ratio, the rounds, and whether both recorded the same."""
    ours, ceiling = (statistics.median(d.seconds for d in runs[side]) for side in ("ours", "ceiling"))
    first = runs["ours"][0]
    return {"bench": "whatif", "events": end, "rounds": len(runs["ours"]), "ours_s": round(ours, 2),
            "ceiling_s": round(ceiling, 2), "ratio": round(ours / ceiling, 3) if ceiling else 0.0,
            "ours_rounds": [round(d.seconds, 2) for d in runs["ours"]],
            "ceiling_rounds": [round(d.seconds, 2) for d in runs["ceiling"]],
            "ours_read_s": [round(d.read_s, 2) for d in runs["ours"]],
            "ceiling_read_s": [round(d.read_s, 2) for d in runs["ceiling"]],
            "same_recording": all(d.recording == first.recording and d.outcome == first.outcome for s in runs.values() for d in s),
            "items": len(first.recording.arrivals), "node_spans": len(first.recording.nodes),
            "never_assigned": sum(1 for a in first.recording.arrivals if a.work_id not in first.outcome.assigned),
            "membership": first.membership, "goal_s": GOAL_S, "load": load, "load_after": os.getloadavg()}


async def main() -> None:
    parser = common_arguments(__doc__.splitlines()[0], default_events=300_000)
    parser.add_argument("--url", default=None, help="a server that already holds the log (read only)")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the server's store here, the log published once")
    parser.add_argument("--api-timeout", type=float, default=120.0, help="seconds a JetStream API call may take")
    args = parser.parse_args()
    load = [f"{x:.2f}" for x in os.getloadavg()]
    async with log_bus(args.url, args.events, args.data_dir, args.api_timeout) as bus:
        runs = await sides(bus, args.rounds)
        emit(result(await last_sequence(bus), runs, load))


if __name__ == "__main__":
    asyncio.run(main())
