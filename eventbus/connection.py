"""One NATS connection per process, with JetStream, and nats errors translated at the edge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from eventbus.errors import BusUnavailable

log = logging.getLogger(__name__)

DEFAULT_URL = "nats://127.0.0.1:4222"


def split_servers(servers: str | list[str]) -> list[str]:
    """Accept a comma-separated list (as in RR_NATS_URL) or a list of URLs."""
    if isinstance(servers, str):
        servers = servers.split(",")
    urls = [s.strip() for s in servers if s.strip()]
    return urls or [DEFAULT_URL]


class Bus:
    """A connected NATS client with its JetStream context and the node it speaks for."""

    def __init__(self, nc: NatsClient, node_id: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.node_id = node_id

    @property
    def connected_url(self) -> str:
        """URL of the server this client is connected to now."""
        url = self.nc.connected_url
        return f"{url.scheme}://{url.netloc}" if url else ""

    async def close(self) -> None:
        """Flush what is buffered, then close; never hangs."""
        if self.nc.is_closed:
            return
        try:
            await asyncio.wait_for(self.nc.drain(), timeout=5)
        except (asyncio.TimeoutError, nats.errors.Error):
            # A connection the server refused (a revoked key) may be half torn down already.
            with contextlib.suppress(OSError):
                await self.nc.close()


async def connect(
    servers: str | list[str],
    *,
    node_id: str,
    name: str | None = None,
    connect_timeout: float = 5.0,
    initial_attempts: int = 2,
    user_credentials: str | None = None,
    error_listener: Callable[[Exception], None] | None = None,
    identity: str | None = None,
    **options: Any,
) -> Bus:
    """Connect to NATS, reconnecting forever afterwards; raises BusUnavailable if no server answers.

    `options` go to nats-py as they are (nkeys_seed_str, inbox_prefix, tls, ...);
    `error_listener` also sees every asynchronous error (permission violations, for probes);
    `identity` names the user whose credentials these are, for the refusal message.
    """
    urls = split_servers(servers)
    errors: list[Exception] = []
    gave_up = asyncio.Event()  # the first connect cannot succeed: stop waiting for it

    async def on_error(exc: Exception) -> None:
        log.warning("nats: %s", exc)
        errors.append(exc)
        del errors[:-8]  # the last few: a refusal is often followed by "connection reset"
        if isinstance(exc, ssl.SSLCertVerificationError):
            gave_up.set()  # retrying cannot make an untrusted certificate trusted
        if error_listener is not None:
            error_listener(exc)

    async def on_disconnect() -> None:
        log.info("nats: disconnected")

    async def on_reconnect() -> None:
        log.info("nats: reconnected")

    nc = NatsClient()

    async def on_closed() -> None:
        gave_up.set()

    settings: dict[str, Any] = dict(
        servers=urls,
        name=name or f"rr:{node_id}",
        connect_timeout=connect_timeout,
        allow_reconnect=True,
        # A bounded first attempt: with -1 nats-py retries the initial connect forever,
        # and with 0 too (it only gives up on a server past a positive limit).
        max_reconnect_attempts=max(1, initial_attempts),
        reconnect_time_wait=0.5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        closed_cb=on_closed,
        user_credentials=user_credentials,
    )
    connecting: asyncio.Future[Any] = asyncio.ensure_future(nc.connect(**settings, **options))
    deadline = (connect_timeout + 0.5) * (max(1, initial_attempts) + 1) * len(urls) + 5.0
    try:
        await _connected_or_given_up(connecting, gave_up, deadline)
    except (OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
        raise BusUnavailable(_unreachable(urls, [*errors, exc], identity or options.get("user"))) from None
    # Once connected, a lost server is waited out for as long as it takes.
    nc.options["max_reconnect_attempts"] = -1
    return Bus(nc, node_id)


async def _connected_or_given_up(connecting: asyncio.Future[Any], gave_up: asyncio.Event, deadline: float) -> None:
    # nats-py 2.16 never finishes connect() after a TLS certificate it cannot verify (it
    # closes the client and waits on); an unverifiable certificate or a close ends the wait.
    closing: asyncio.Future[Any] = asyncio.ensure_future(gave_up.wait())
    try:
        await asyncio.wait([connecting, closing], timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        connecting.cancel()  # our caller gave up: so does the connection attempt
        raise
    finally:
        closing.cancel()
    if connecting.done():
        connecting.result()
        return
    connecting.cancel()
    with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, OSError):
        await connecting
    raise asyncio.TimeoutError("the client gave up before it connected" if gave_up.is_set() else f"no answer within {deadline:g}s")


def _unreachable(urls: list[str], errors: list[BaseException], user: str | None) -> str:
    """Why connecting failed, in one line that says what to do."""
    refused = next(filter(None, (refusal_reason(e, user) for e in errors)), "")
    if refused:
        return f"NATS at {','.join(urls)} refused the connection: {refused}"
    texts = [str(e) or type(e).__name__ for e in errors]
    if any("CERTIFICATE_VERIFY_FAILED" in t for t in texts):
        return (f"cannot reach NATS at {','.join(urls)}: the server's TLS certificate is not trusted "
                f"({next(t for t in texts if 'CERTIFICATE_VERIFY_FAILED' in t)}); set tls_ca in this node's "
                "credentials file to the CA that signed the servers' certificates")
    return f"cannot reach NATS at {','.join(urls)}: {texts[-1]}"


def refusal_reason(exc: BaseException, user: str | None) -> str:
    """Why the server refused a client's credentials, or '' when `exc` is not a refusal."""
    # nats-py reports the server's -ERR only to the error callback; connect() itself then
    # fails with "no servers available", which says nothing about credentials.
    text = str(exc).lower()
    refused = isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in text
    if not refused and "authentication" not in text:
        return ""
    given = f"the credentials of user {user!r} were rejected: revoked, rotated or outdated" if user else "no credentials were given"
    return (
        f"authorization violation ({given}); point RR_NATS_CREDS at this node's credentials file "
        "(made by `rr auth gen`)"
    )
