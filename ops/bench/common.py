"""Shared pieces of the event bus benchmarks: a throwaway server, sample events, rounds, output.

Every benchmark measures our code and its ceiling (plain nats-py doing the same work) in the
same process against the same server, alternating the order round by round, so machine noise
hits both sides alike and the ratio means something even when absolute rates do not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import nats.js.errors

from eventbus.connection import Bus, connect
from eventbus.events import Event, WorkProgress, encode, stamp
from eventbus.natsserver import NatsServer, ServerSpec, find_binary, free_port
from eventbus.streams import EVENTS_STREAM, StreamSettings, provision

BENCH_NODE = "bench-node"
KEPT_STORE_WAIT_S = 600.0  # a kept store's start (its recovery) and stop (its flush)


def log(message: str) -> None:
    """Progress for people, on stderr; stdout carries only the result line."""
    print(message, file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """The benchmark's one machine-readable line on stdout."""
    print(json.dumps(result, separators=(",", ":")), flush=True)


def common_arguments(description: str, default_events: int) -> argparse.ArgumentParser:
    """A parser with the knobs every bench shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--events", type=int, default=default_events, help="events per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (alternating order)")
    parser.add_argument("--storage", choices=("file", "memory"), default="file", help="stream storage")
    return parser


def stream_settings(storage: str) -> StreamSettings:
    """Production stream settings, with memory streams sized to fit the server's memory limit."""
    if storage == "memory":
        return StreamSettings(storage="memory", events_max_gib=1.0, deadletter_max_gib=0.1)
    return StreamSettings()


@contextlib.asynccontextmanager
async def bench_server(sync_interval: str | None = None, data_dir: Path | None = None) -> AsyncIterator[NatsServer]:
    """A JetStream nats-server in a temp dir on a free port (with this `sync_interval`, else the
    server's default); stopped and its dir removed on exit. With `data_dir`, its store is kept
    there (and what an earlier run left there is served again), so a long log is published once."""
    with tempfile.TemporaryDirectory(prefix="rr-bench-") as tmp:
        store = (data_dir or Path(tmp)) / "jetstream"
        spec = ServerSpec(name=f"rr-bench-{sync_interval or 'default'}", port=free_port(),
                          store_dir=str(store), sync_interval=sync_interval)
        server = NatsServer(spec)
        # A kept store of a year's log (~9 GB) is recovered before the server opens its port, and flushed when it stops.
        start_s, stop_s = (KEPT_STORE_WAIT_S, KEPT_STORE_WAIT_S) if data_dir is not None else (10.0, 5.0)
        await asyncio.to_thread(server.start, start_s)
        try:
            yield server
        finally:
            await asyncio.to_thread(server.stop, stop_s)


@functools.cache
def server_version() -> str:
    """Version of the nats-server binary the benchmarks run against, e.g. 2.15.1."""
    # A blocking ~10 ms call, made once and after the measurements, never between them.
    out = subprocess.run([find_binary(), "--version"], capture_output=True, text=True, timeout=10, check=False)
    return out.stdout.strip().rsplit("v", 1)[-1]


@contextlib.asynccontextmanager
async def bench_bus(url: str, api_timeout_s: float | None = None) -> AsyncIterator[Bus]:
    """A connection that can carry a benchmark's bursts; closed on exit.

    `api_timeout_s`: how long a JetStream API call (nats-py's own and the history reads') may take,
    where a long log under load needs more than the defaults (5 and 10 s).
    """
    # A large pending buffer so that bursts of publishes are not throttled by the client.
    bus = await connect(url, node_id=BENCH_NODE, pending_size=64 * 1024 * 1024)
    if api_timeout_s is not None:
        bus.api_timeout_s = api_timeout_s
        bus.js = bus.nc.jetstream(timeout=api_timeout_s)
    try:
        yield bus
    finally:
        await bus.close()


async def kept_events_stream(bus: Bus, events: int, settings: StreamSettings) -> bool:
    """Whether RR_EVENTS already holds exactly `events` records (a kept `--data-dir`'s log, publishing being
    deterministic for a seed); if so, every other stream (snapshot and entry buckets) is deleted and the declared
    ones provisioned again (the log sources the lease bucket), as a fresh start."""
    try:
        info = await bus.js.stream_info(EVENTS_STREAM)
    except nats.js.errors.NotFoundError:
        return False
    if info.state.messages != events or info.state.last_seq != events:
        return False
    for stream in await bus.js.streams_info():
        if stream.config.name is not None and stream.config.name != EVENTS_STREAM:
            await bus.js.delete_stream(stream.config.name)
    await provision(bus.js, settings)
    return True


async def fresh_events_stream(bus: Bus, settings: StreamSettings) -> None:
    """Delete RR_EVENTS (messages, consumers and dedupe window) and provision it again."""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await bus.js.delete_stream(EVENTS_STREAM)
    await provision(bus.js, settings)


def sample_events(count: int) -> list[Event]:
    """Unstamped WorkProgress events as a busy fleet emits them (~350 bytes on the wire)."""
    return [
        WorkProgress(
            work_id=f"w-{i // 8:08d}",
            node=f"gpu-{i % 31:02d}",
            attempt=1,
            fraction=(i % 100) / 100,
            message=f"selfplay game {i % 500} of 500, 41.7 moves/s",
            epoch=7,
        )
        for i in range(count)
    ]


def wire_form(events: Sequence[Event]) -> list[tuple[str, bytes, dict[str, str]]]:
    """(subject, payload, headers) of each event as our publisher would stamp and send it."""
    stamped = [stamp(e, BENCH_NODE) for e in events]
    return [(e.subject(), encode(e), {"Nats-Msg-Id": e.id}) for e in stamped]


async def alternate(
    rounds: int, sides: Mapping[str, Callable[[], Awaitable[float]]], before_each: Callable[[], Awaitable[None]]
) -> dict[str, list[float]]:
    """Run every side `rounds` times, rotating which goes first; each returns events/s."""
    names = list(sides)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            await before_each()
            rate = await sides[name]()
            rates[name].append(rate)
            log(f"round {r + 1}/{rounds} {name}: {rate:,.0f} events/s")
    return rates


def summary(rates: dict[str, list[float]], ours: str, raw: str) -> dict[str, Any]:
    """Medians of each side, their ratio, the rounds that show how noisy the run was, and versions."""
    raw_median = statistics.median(rates[raw])
    ours_median = statistics.median(rates[ours])
    return {
        "raw_per_s": round(raw_median),
        "ours_per_s": round(ours_median),
        "ratio": round(ours_median / raw_median, 3) if raw_median else 0.0,
        "raw_rounds": [round(r) for r in rates[raw]],
        "ours_rounds": [round(r) for r in rates[ours]],
        "nats_server": server_version(),
        "nats_py": importlib.metadata.version("nats-py"),
        "cpus": os.cpu_count(),
    }


def rounds_result(name: str, events: int, rounds: int, settings: StreamSettings, rates: dict[str, list[float]],
                  goal: float) -> dict[str, Any]:
    """The result line of a bench whose sides are "ours" and "raw": its knobs, the summary and the goal."""
    return {"bench": name, "events": events, "rounds": rounds, "storage": settings.storage,
            **summary(rates, ours="ours", raw="raw"), "goal": goal}


RoundsBench = Callable[[int, int, StreamSettings], Coroutine[Any, Any, dict[str, Any]]]


def run_rounds(doc: str, name: str, default_events: int, bench: RoundsBench) -> None:
    """A rounds bench's main: parse the shared knobs, run `bench(events, rounds, settings)`, print its JSON line."""
    args = common_arguments(doc.splitlines()[0], default_events=default_events).parse_args()
    settings = stream_settings(args.storage)
    log(f"{name} bench: {args.events:,} events x {args.rounds} rounds per side, {args.storage} storage")
    emit(asyncio.run(bench(args.events, args.rounds, settings)))


class Stopwatch:
    """Elapsed seconds since creation, for events/s figures."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()

    def cpu_us(self, count: int) -> float:
        """This process's CPU microseconds per event since the stopwatch started (the client's side alone)."""
        return (time.process_time() - self._cpu_start) / max(count, 1) * 1e6

    def seconds(self) -> float:
        """Seconds since the stopwatch started."""
        return time.perf_counter() - self._start

    def rate(self, count: int) -> float:
        """Events per second since the stopwatch started."""
        return count / max(time.perf_counter() - self._start, 1e-9)
