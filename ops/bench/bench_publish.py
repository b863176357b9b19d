"""Publish throughput: our Publisher.publish_many against nats-py's publish_async, same bytes.

raw:  js.publish_async of pre-stamped, pre-encoded payloads with Nats-Msg-Id headers,
      then every ack future awaited (with a timeout: those futures never time out alone).
ours: Publisher.publish_many of the equivalent unstamped Event objects; stamping, encoding
      and ack decoding are part of our code's cost, so they are inside the timing.
Each round starts on a fresh RR_EVENTS stream and checks that every event landed.

decisions: a leader's decisions as its term publishes them (Publisher.publish, one ack awaited
      each, DECISION_WINDOW in flight as the assigner does), unfenced against fenced
      (`Nats-Expected-Last-Subject-Sequence` on the role's election subjects), same events,
      same run: the fence's cost per decision.
Each side's client CPU per event (this process's, the server apart) is in the line too
(`cpu_us_per_event`, `fence.cpu_us_per_decision`): far steadier than the rates on a shared machine.
Run: python -m ops.bench.bench_publish [--events 100000] [--rounds 3]
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from eventbus.connection import Bus
from eventbus.events import LeaderElected
from eventbus.publisher import FenceToken, Publisher
from eventbus.streams import EVENTS_STREAM, StreamSettings
from eventbus.subjects import election_filter
from ops.bench.common import (
    Stopwatch,
    alternate,
    bench_bus,
    bench_server,
    fresh_events_stream,
    rounds_result,
    run_rounds,
    sample_events,
    wire_form,
)

GOAL = 0.8
DECISION_WINDOW = 256  # decisions in flight at once, as the assigner's PUBLISH_WINDOW


def ack_timeout(events: int) -> float:
    """A bound on waiting for a round's acks, far above what a healthy server needs."""
    return 30.0 + events / 2_000


async def raw_round(bus: Bus, events: int, cpu: list[float] | None = None) -> float:
    """Events/s of plain publish_async over pre-encoded payloads; its CPU us per event appended to `cpu`."""
    wire = wire_form(sample_events(events))
    clock = Stopwatch()
    futures = [await bus.js.publish_async(subject, data, headers=headers) for subject, data, headers in wire]
    done, pending = await asyncio.wait(futures, timeout=ack_timeout(events))
    rate = clock.rate(events)
    if cpu is not None:
        cpu.append(clock.cpu_us(events))
    for future in pending:
        future.cancel()
    failed = len(pending) + sum(1 for f in done if f.exception() is not None)
    if failed:
        raise RuntimeError(f"raw publish: {failed} of {events} publishes not acked")
    return rate


async def ours_round(publisher: Publisher, events: int, cpu: list[float] | None = None) -> float:
    """Events/s of Publisher.publish_many, stamping and encoding included; its CPU us per event appended to `cpu`."""
    batch = sample_events(events)
    clock = Stopwatch()
    published = await asyncio.wait_for(publisher.publish_many(batch), ack_timeout(events))
    rate = clock.rate(events)
    if cpu is not None:
        cpu.append(clock.cpu_us(events))
    if len(published) != events or any(p.duplicate for p in published):
        raise RuntimeError(f"ours: {len(published)} published, some duplicate, of {events}")
    return rate


async def decisions_round(publisher: Publisher, events: int, fenced: bool, cpu: list[float]) -> float:
    """Decisions/s of one-by-one publishes (DECISION_WINDOW in flight), with or without the fence header."""
    fence = None
    if fenced:
        elected = await publisher.publish(LeaderElected(role="scheduler", node="bench", epoch=7))
        fence = FenceToken(election_filter("scheduler"), elected.seq)
    batch = sample_events(events)
    clock = Stopwatch()
    for start in range(0, events, DECISION_WINDOW):
        window = batch[start:start + DECISION_WINDOW]
        await asyncio.wait_for(asyncio.gather(*(publisher.publish(e, fence=fence) for e in window)), ack_timeout(len(window)))
    cpu.append(clock.cpu_us(events))
    return clock.rate(events)


async def decisions(bus: Bus, publisher: Publisher, events: int, rounds: int, settings: StreamSettings) -> dict[str, Any]:
    """Unfenced against fenced decisions, alternating; medians and the fence's cost per decision in microseconds."""

    cpu: dict[bool, list[float]] = {False: [], True: []}

    async def side(fenced: bool) -> float:
        rate = await decisions_round(publisher, events, fenced, cpu[fenced])
        await check_landed(bus, events + fenced)  # the fenced round's election is stored too
        return rate

    rates = await alternate(rounds, {"unfenced": lambda: side(False), "fenced": lambda: side(True)},
                            lambda: fresh_events_stream(bus, settings))
    unfenced, fenced = statistics.median(rates["unfenced"]), statistics.median(rates["fenced"])
    return {"decisions": events, "unfenced_per_s": round(unfenced), "fenced_per_s": round(fenced),
            "fence_cost_us": round((1 / fenced - 1 / unfenced) * 1e6, 2),
            "cpu_us_per_decision": {"unfenced": round(statistics.median(cpu[False]), 2), "fenced": round(statistics.median(cpu[True]), 2)},
            "unfenced_rounds": [round(r) for r in rates["unfenced"]], "fenced_rounds": [round(r) for r in rates["fenced"]]}


async def check_landed(bus: Bus, events: int) -> None:
    """Every event of the round is in the stream exactly once."""
    info = await bus.js.stream_info(EVENTS_STREAM)
    if info.state.messages != events:
        raise RuntimeError(f"stream holds {info.state.messages} messages, expected {events}")


async def bench(events: int, rounds: int, settings: StreamSettings) -> dict[str, Any]:
    """Alternating rounds of both sides; the result line."""
    async with bench_server() as server, bench_bus(server.url) as bus:
        publisher = Publisher(bus)
        cpu: dict[str, list[float]] = {"raw": [], "ours": []}

        async def raw() -> float:
            rate = await raw_round(bus, events, cpu["raw"])
            await check_landed(bus, events)
            return rate

        async def ours() -> float:
            rate = await ours_round(publisher, events, cpu["ours"])
            await check_landed(bus, events)
            return rate

        await fresh_events_stream(bus, settings)
        await ours_round(publisher, min(events, 2_000))  # warm both paths up: subscriptions, caches
        await raw_round(bus, min(events, 2_000))
        rates = await alternate(rounds, {"raw": raw, "ours": ours}, lambda: fresh_events_stream(bus, settings))
        fence = await decisions(bus, publisher, max(1, events // 10), rounds, settings)
    cpu_us = {side: round(statistics.median(values), 2) for side, values in cpu.items()}
    return {**rounds_result("publish", events, rounds, settings, rates, GOAL), "cpu_us_per_event": cpu_us, "fence": fence}


def main() -> None:
    """Parse arguments, run the benchmark, print its JSON line."""
    run_rounds(__doc__, "publish", 100_000, bench)


if __name__ == "__main__":
    main()
