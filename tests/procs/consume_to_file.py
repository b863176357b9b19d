"""A consumer process for crash tests: appends each handled stream sequence to a file, fsync'd before the ack.

Usage: python -m tests.procs.consume_to_file NATS_URL DURABLE OUT_FILE
Runs until SIGTERM, which stops the consumer gracefully (consumer.stop()); SIGKILL is the crash.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from eventbus.connection import connect
from eventbus.consumer import ConsumerSpec, Delivery, EventConsumer
from eventbus.events import EVENT_TYPES, Event

# A short ack wait brings back what a killed process held within seconds; a small batch keeps
# the client-side queue short enough that nothing waits in it past the ack wait.
SPEC = {"ack_wait_s": 2.0, "batch": 100, "pull_expires_s": 1.0}


def appender(path: str):  # type: ignore[no-untyped-def]
    """A sync handler (run in a thread by the consumer) writing one line per event, durable before return."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def handle(event: Event, delivery: Delivery) -> None:
        os.write(fd, f"{delivery.stream_seq}\n".encode())  # one write: a line is never torn
        os.fsync(fd)

    return handle, fd


async def consume(url: str, durable: str, out: str) -> None:
    """Consume every event type until SIGTERM."""
    bus = await connect(url, node_id=f"consumer-{os.getpid()}")
    handle, fd = appender(out)
    try:
        consumer = EventConsumer(bus, ConsumerSpec(durable=durable, **SPEC), {k: handle for k in EVENT_TYPES.values()})
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(consumer.run())
            await stopping.wait()
            await consumer.stop()
    finally:
        os.close(fd)
        await bus.close()


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("durable")
    parser.add_argument("out")
    args = parser.parse_args()
    asyncio.run(consume(args.url, args.durable, args.out))


if __name__ == "__main__":
    main()
