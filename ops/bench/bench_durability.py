"""The cost of `sync_interval: always`: acknowledged publishes per second with and without an fsync per write.

Two throwaway servers in the same run, identical but for the jetstream `sync_interval`:
  default: nats-server's default (a flush every 2 minutes; acks may precede the disk)
  always:  every write fsynced before its ack (ops/nats/*.conf)
Measured on each, alternating which server goes first round by round:
  sequential: one `js.publish` at a time, each awaiting its ack (a service emitting one event
              and waiting, the worst case for fsync latency)
  pipelined:  our Publisher.publish_many (many acks in flight, as bulk emitters do)
Each round starts on a fresh RR_EVENTS stream and checks that every event landed.
`ratio` is always/default for sequential publishes; `pipelined_ratio` the same for pipelined.
Run: python -m ops.bench.bench_durability [--events 2000] [--pipelined 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import statistics
from typing import Any

from eventbus.connection import Bus
from eventbus.publisher import Publisher
from eventbus.streams import EVENTS_STREAM, StreamSettings
from ops.bench.common import Stopwatch, bench_bus, bench_server, emit, fresh_events_stream, log, sample_events, server_version, wire_form

SIDES = {"default": None, "always": "always"}


async def sequential_round(bus: Bus, events: int) -> float:
    """Acked publishes/s, one at a time."""
    wire = wire_form(sample_events(events))
    clock = Stopwatch()
    for subject, data, headers in wire:
        await bus.js.publish(subject, data, headers=headers, timeout=10)
    return clock.rate(events)


async def pipelined_round(bus: Bus, events: int) -> float:
    """Acked publishes/s through Publisher.publish_many."""
    batch = sample_events(events)
    clock = Stopwatch()
    published = await asyncio.wait_for(Publisher(bus).publish_many(batch), 60 + events / 1_000)
    rate = clock.rate(events)
    if len(published) != events:
        raise RuntimeError(f"pipelined: {len(published)} of {events} acked")
    return rate


async def check_landed(bus: Bus, events: int) -> None:
    """The round's events are all in the stream."""
    info = await bus.js.stream_info(EVENTS_STREAM)
    if info.state.messages != events:
        raise RuntimeError(f"stream holds {info.state.messages} messages, expected {events}")


async def measure(buses: dict[str, Bus], kind: str, events: int, rounds: int) -> dict[str, list[float]]:
    """`rounds` rounds of one kind on each server, alternating which goes first."""
    settings = StreamSettings()
    run = sequential_round if kind == "sequential" else pipelined_round
    rates: dict[str, list[float]] = {side: [] for side in buses}
    names = list(buses)
    for r in range(rounds):
        for side in names[r % 2 :] + names[: r % 2]:
            await fresh_events_stream(buses[side], settings)
            rates[side].append(await run(buses[side], events))
            await check_landed(buses[side], events)
            log(f"round {r + 1}/{rounds} {kind} {side}: {rates[side][-1]:,.0f} acks/s")
    return rates


async def bench(events: int, pipelined: int, rounds: int) -> dict[str, Any]:
    """Both kinds of publishing on both servers; the result line."""
    async with bench_server(None) as default, bench_server("always") as always:
        async with bench_bus(default.url) as default_bus, bench_bus(always.url) as always_bus:
            buses = {"default": default_bus, "always": always_bus}
            for bus in buses.values():  # warm up: subscriptions, stream files
                await fresh_events_stream(bus, StreamSettings())
                await sequential_round(bus, min(events, 200))
            sequential = await measure(buses, "sequential", events, rounds)
            batched = await measure(buses, "pipelined", pipelined, rounds)
    seq = {side: statistics.median(r) for side, r in sequential.items()}
    pipe = {side: statistics.median(r) for side, r in batched.items()}
    return {
        "bench": "durability", "events": events, "pipelined_events": pipelined, "rounds": rounds,
        "default_per_s": round(seq["default"]), "always_per_s": round(seq["always"]),
        "ratio": round(seq["always"] / seq["default"], 3),
        "default_pipelined_per_s": round(pipe["default"]), "always_pipelined_per_s": round(pipe["always"]),
        "pipelined_ratio": round(pipe["always"] / pipe["default"], 3),
        "always_ack_ms": round(1000 / seq["always"], 3), "default_ack_ms": round(1000 / seq["default"], 3),
        "rounds_per_s": {f"{kind}_{side}": [round(x) for x in r]
                         for kind, rates in (("sequential", sequential), ("pipelined", batched)) for side, r in rates.items()},
        "nats_server": server_version(), "nats_py": importlib.metadata.version("nats-py"), "cpus": os.cpu_count(),
    }


def main() -> None:
    """Parse arguments, run the benchmark, print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000, help="sequential publishes per round")
    parser.add_argument("--pipelined", type=int, default=20_000, help="pipelined publishes per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server and kind")
    args = parser.parse_args()
    log(f"durability bench: {args.events:,} sequential and {args.pipelined:,} pipelined publishes x {args.rounds} rounds "
        f"on a default and a sync_interval=always server")
    emit(asyncio.run(bench(args.events, args.pipelined, args.rounds)))


if __name__ == "__main__":
    main()
