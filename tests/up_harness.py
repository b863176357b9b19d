"""`rr up` as a running system for tests: its own ports and data dir, a client bus, and its API's address."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from eventbus.connection import Bus, connect
from eventbus.events import Event
from eventbus.history import Record, replay
from eventbus.integrity import decode_on
from eventbus.natsserver import port_in_use
from eventbus.publisher import Publisher
from tests.helpers import eventually

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Up:
    """A running `rr up`: the process, a client on its NATS, and its API's base URL."""

    proc: asyncio.subprocess.Process
    bus: Bus
    api: str
    data: Path
    nats_url: str

    async def log(self) -> list[tuple[int, Event]]:
        """The whole events stream, decoded."""
        records: list[Record] = []
        await replay(self.bus, records.append)
        return [(r.seq, decode_on(r.subject, r.data, r.headers)) for r in records]

    def publisher(self) -> Publisher:
        """A publisher on the client bus (as node `test`)."""
        return Publisher(self.bus)

    async def wait_exit(self, timeout: float) -> tuple[int, str]:
        """Until rr up exits by itself: its exit code and stderr."""
        _, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode()


async def _connect(port: int) -> Bus | None:
    try:
        return await connect(f"nats://127.0.0.1:{port}", node_id="test")
    except Exception:  # noqa: BLE001 - not up yet
        return None


async def wait_bus(port: int, timeout: float = 60.0) -> Bus:
    """A client on the NATS of a starting `rr up`, as soon as its port accepts connections.

    The port is probed first: a client connecting to a closed port spends ~1 s in its retries,
    so connecting alone saw the server up to that much after it was up.
    """
    await eventually(lambda: asyncio.to_thread(port_in_use, "127.0.0.1", port), timeout=timeout, message="rr up's NATS port opens")
    return await eventually(lambda: _connect(port), timeout=timeout, interval=0.05, message="rr up serves NATS")


@contextlib.asynccontextmanager
async def rr_up(data: Path, config: Path, node: str, *, grace_s: int = 15) -> AsyncIterator[Up]:
    """`rr up --node-id node` with `config`, stopped with SIGINT at the end unless it exited already (then 0 is checked)."""
    port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RR_", "OTEL_"))} | {"PYTHONPATH": str(PROJECT_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "up", "--grace", str(grace_s), "--nats-port", str(port),
        "--api-port", str(api_port), "--data-dir", str(data), "--node-id", node, "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=env, cwd=PROJECT_ROOT,
    )
    bus: Bus | None = None
    try:
        bus = await wait_bus(port)
        yield Up(proc, bus, f"http://127.0.0.1:{api_port}", data, f"nats://127.0.0.1:{port}")
    finally:
        if bus is not None:
            await bus.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-3000:]
