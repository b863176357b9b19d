"""One NATS connection per process, with JetStream, and nats errors translated at the edge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import nats
import nats.aio.client
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.protocol.parser import AUTHORIZATION_VIOLATION

from eventbus import headerlines, pubframe
from eventbus.errors import BusUnavailable
from eventbus.protocolparser import GatheringParser
from eventbus.tasks import stop_tasks

log = logging.getLogger(__name__)

DEFAULT_URL = "nats://127.0.0.1:4222"
# A server that vanishes without closing the connection (a cut link, a partition) is noticed only
# by unanswered pings: nats-py's default (every 120 s, 2 outstanding) leaves a service talking to
# nobody for 4 minutes before it moves to another server of the cluster; this takes ~15 s.
PING_INTERVAL_S = 5
MAX_OUTSTANDING_PINGS = 3
AUTH_RETRY_S = 60.0  # how long refused credentials are re-read and retried before the connection closes for good

# nats-py reads its socket 32 KiB at a time into a stream buffer of the same limit, so a 1 MiB
# object chunk costs ~32 reads and as many pauses and resumptions of the socket's reader (an
# epoll change each). Reading up to a chunk at once cut a download's client CPU by ~12% and
# raised five parallel downloads' MB/s by ~35% here (ops/bench/README.md, bench_distribution);
# small messages are unaffected (a read returns what has arrived). nats-py takes the size from
# this module constant at every connect and read, so setting it covers reconnects too.
READ_BUFFER_BYTES = 1 << 20
API_TIMEOUT_S = 10.0  # a JetStream API call's default wait in reads and listings (Bus.api_timeout_s)
nats.aio.client.DEFAULT_BUFFER_SIZE = max(nats.aio.client.DEFAULT_BUFFER_SIZE, READ_BUFFER_BYTES)

# Returns the NKey seed to sign the next connect with, read afresh; None keeps the current one.
CredentialsSource = Callable[[], Awaitable[str | None]]

# A subscription's messages as the parser cut them: (subject, reply, payload, header block or None)
# -> a subject to answer with an empty message (JetStream flow control), or None.
DirectHandler = Callable[[bytes, bytes, bytes, bytes | None], str | None]


class _Handled:
    """An awaitable that is done at once: a message a raw handler took needs nothing more from the parser."""

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


_HANDLED = _Handled()
_UNSENDABLE = re.compile(r"[ \t\r\n]")  # nats-py's rule: a subject holding these would break the protocol line
# The nats-py internals `publish_block` queues its frame through, as nats-py's own publish does; a
# nats-py without them gets the header block back as a dict and publishes it the slower way.
PUBLISH_HOOKS = all(name in NatsClient._send_publish.__code__.co_names  # noqa: SLF001
                    for name in ("_send_command", "_flush_queue", "_flush_pending"))


def split_servers(servers: str | list[str]) -> list[str]:
    """Accept a comma-separated list (as in RR_NATS_URL) or a list of URLs."""
    if isinstance(servers, str):
        servers = servers.split(",")
    urls = [s.strip() for s in servers if s.strip()]
    return urls or [DEFAULT_URL]


class Bus:
    """A connected NATS client with its JetStream context and the node it speaks for."""

    def __init__(self, nc: NatsClient, node_id: str, closed_for_good: asyncio.Event | None = None) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.node_id = node_id
        # Seconds one JetStream API call of a history read or a listing may take (creating a consumer makes the
        # server count what its filters match from its start: on a year's log under load, more than the default).
        self.api_timeout_s = API_TIMEOUT_S
        # Set when the client gave up on its own (credentials refused past AUTH_RETRY_S, a fatal
        # server error), never by close(): a service waits on it to exit rather than live on useless.
        self.closed_for_good = closed_for_good or asyncio.Event()
        self.closing = False

    @property
    def last_error(self) -> str:
        """The client's last error, for the one line a service exits with."""
        reason = getattr(self.nc, "gave_up_reason", "")
        err = self.nc.last_error
        return reason or (f"{err or type(err).__name__}" if err is not None else "no error recorded")

    @property
    def connected_url(self) -> str:
        """URL of the server this client is connected to now."""
        url = self.nc.connected_url
        return f"{url.scheme}://{url.netloc}" if url else ""

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered (for at most `timeout`), then close; never hangs."""
        self.closing = True
        if self.nc.is_closed:
            return
        try:
            await asyncio.wait_for(self.nc.drain(), timeout=timeout)
        except (TimeoutError, nats.errors.Error):
            # A connection the server refused (a revoked key) may be half torn down already.
            with contextlib.suppress(OSError):
                await self.nc.close()
        if isinstance(self.nc, RenewingClient):
            await self.nc.end_reconnect_attempts(timeout)


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
    refresh_credentials: CredentialsSource | None = None,
    auth_retry_s: float = AUTH_RETRY_S,
    **options: Any,
) -> Bus:
    """Connect to NATS, reconnecting forever afterwards; raises BusUnavailable if no server answers.

    `options` go to nats-py as they are (nkeys_seed_str, inbox_prefix, tls, ...);
    `error_listener` also sees every asynchronous error (permission violations, for probes);
    `identity` names the user whose credentials these are, for the refusal message.
    With `refresh_credentials`, a connection whose credentials the server refuses (a rotated or
    revoked key) re-reads them before every reconnect attempt instead of closing, for
    `auth_retry_s`; past that it closes for good and sets `Bus.closed_for_good`.
    """
    urls = split_servers(servers)
    errors: list[Exception] = []
    gave_up = asyncio.Event()  # the first connect cannot succeed: stop waiting for it
    closed_for_good = asyncio.Event()
    nc = RenewingClient(refresh_credentials, auth_retry_s)

    async def on_error(exc: Exception) -> None:
        if refusal_reason(exc, None):
            nc.auth_refused()
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
        nc.auth_accepted()
        log.info("nats: reconnected")

    async def on_closed() -> None:
        gave_up.set()
        closed_for_good.set()

    settings: dict[str, Any] = dict(
        servers=urls,
        name=name or f"rr:{node_id}",
        connect_timeout=connect_timeout,
        allow_reconnect=True,
        # A bounded first attempt: with -1 nats-py retries the initial connect forever,
        # and with 0 too (it only gives up on a server past a positive limit).
        max_reconnect_attempts=max(1, initial_attempts),
        reconnect_time_wait=0.5,
        ping_interval=PING_INTERVAL_S,
        max_outstanding_pings=MAX_OUTSTANDING_PINGS,
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
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise BusUnavailable(_unreachable(urls, [*errors, exc], identity or options.get("user"))) from None
    # Once connected, a lost server is waited out for as long as it takes.
    nc.options["max_reconnect_attempts"] = -1
    return Bus(nc, node_id, closed_for_good)


class RenewingClient(NatsClient):
    """nats-py's client, except that refused credentials are re-read and retried instead of ending the connection.

    nats-py closes a connection for good on the server's "Authorization Violation", which a
    credential rotation causes for every connected client: services stayed alive sending nothing.
    Here the violation starts a reconnect, each attempt presents the credentials read afresh, and
    only after `auth_retry_s` of refusals does the client close (a revoked node: its service exits
    and says why). Subscriptions survive the reconnect, so a worker's jobs never notice.
    """

    # Every stored event arrives with a header block that nats-py parses before any callback:
    # the same rule, cheaper (eventbus/headerlines.py). Used only when fast_mail_parser is absent.
    _parse_header_lines = staticmethod(headerlines.parse)

    def __init__(self, refresh: CredentialsSource | None, auth_retry_s: float) -> None:
        super().__init__()
        # An object chunk's body is gathered from the socket's reads and joined once, not copied three times.
        self._ps = GatheringParser(self)
        self._refresh = refresh
        self._auth_retry_s = auth_retry_s
        self._refused_since: float | None = None
        self.gave_up_reason = ""  # why this client closed itself, for the service's last line
        # Subscriptions whose messages go straight from the parser to a handler (eventbus/orderedread.py),
        # by subscription id: no Msg, header dict, queue or task switch per message, which is most
        # of what nats-py spends on a message of a long read of the log.
        self.direct: dict[int, DirectHandler] = {}

    # nats-py's parser awaits this for every message. Not a coroutine itself: every other
    # subscription's message gets nats-py's own coroutine with no frame of ours around it, and a
    # raw handler's an awaitable that is already done (or the flow-control answer's publish).
    def _process_msg(  # type: ignore[override]
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None,
    ) -> Awaitable[None]:
        handler = self.direct.get(sid)
        if handler is None:
            return super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
        try:
            answer = handler(subject, reply, data, headers)
        except Exception:  # raised into the parser, it would be taken for a protocol error and drop the connection
            log.exception("nats: the handler of subscription %d failed on a message on %r", sid, subject)
            answer = None
        return _HANDLED if answer is None else self.publish(answer)

    async def publish_block(self, subject: str, reply: str, block: bytes, payload: bytes) -> None:
        """nats-py's `publish` with the header block already built (eventbus/pubframe.py): the same checks,
        the same frame, queued and flushed as nats-py queues and flushes its own."""
        if not PUBLISH_HOOKS:
            await self.publish(subject, payload, reply, pubframe.parsed(block))
            return
        if not subject or _UNSENDABLE.search(subject) or _UNSENDABLE.search(reply):
            raise nats.errors.BadSubjectError
        if self.is_closed:
            raise nats.errors.ConnectionClosedError
        if self.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        size = len(payload)
        if not self.is_connected and (self._max_pending_size <= 0 or size + self._pending_data_size > self._max_pending_size):
            raise nats.errors.OutboundBufferLimitError  # reconnecting, with no room left to buffer it
        if size > self._max_payload:
            raise nats.errors.MaxPayloadError
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += size
        await self._send_command(pubframe.hpub_frame(subject, reply, block, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    # nats-py writes a PING straight to the transport, while commands queued before it (an UNSUB,
    # a SUB) wait in its buffer for the flusher task: the PING went out first, so a flush's pong
    # did not vouch for them. A read that unsubscribed and flushed (eventbus/orderedread.drained)
    # then received a thousand more records, pushed after its pong, while its caller held the
    # loop. Queued commands go out ahead of the PING, as their order asks.
    async def _send_ping(self, future: asyncio.Future[None] | None = None) -> None:
        if self._pending_data_size > 0 and self.is_connected and self._transport is not None:
            self._transport.writelines(self._pending[:])
            self._pending = []
            self._pending_data_size = 0
        await super()._send_ping(future)

    # nats-py cancels its reconnect task once on close and waits half a second for it. That cancel
    # can be lost (Python 3.11's wait_for may return a refused connect instead, which the reconnect
    # loop catches and retries): the task then reconnects forever and asyncio.run waits on it
    # forever, so a service asked to stop while its bus was down hung in half of the tries here
    # (seen: one task alive after close, ended by a second cancel). Every task it starts (one per
    # lost connection, each cancelling the last) is kept, to be cancelled until it has ended.
    @property
    def _reconnection_task(self) -> asyncio.Task[None] | None:
        return self.__dict__.get("_reconnect_task_now")

    @_reconnection_task.setter
    def _reconnection_task(self, task: asyncio.Task[None] | None) -> None:
        self.__dict__["_reconnect_task_now"] = task
        if task is not None:
            self.__dict__.setdefault("_reconnect_tasks", set()).add(task)

    async def end_reconnect_attempts(self, timeout: float) -> None:
        """After close: cancel every reconnect task nats-py started until each has ended, for at most `timeout`."""
        tasks: set[asyncio.Task[None]] = self.__dict__.get("_reconnect_tasks", set())
        await stop_tasks(list(tasks), timeout)  # logs a task that never ended
        tasks.clear()

    def auth_refused(self) -> None:
        """The server refused our credentials (now or at a reconnect): the retry budget runs from the first refusal."""
        if self._refused_since is None:
            self._refused_since = time.monotonic()

    def auth_accepted(self) -> None:
        """A reconnect succeeded: the next refusal starts a new budget."""
        self._refused_since = None

    async def _process_err(self, err_msg: str) -> None:  # nats-py's hook for a -ERR from the server
        if self._refresh is not None and AUTHORIZATION_VIOLATION in err_msg and self.is_connected:
            self.auth_refused()
            await self._error_cb(nats.errors.AuthorizationError())
            await self._process_op_err(nats.errors.AuthorizationError())  # reconnect, as for a lost server
            return
        await super()._process_err(err_msg)

    async def _close(self, status: int, do_cbs: bool = True) -> None:  # nats-py's close, from close() or on giving up
        if not self.is_connected:
            # What was buffered while disconnected can never be sent; nats-py would flush it into
            # the dead socket, fail with "Connection lost" and never finish closing.
            self._pending, self._pending_data_size = [], 0
        await super()._close(status, do_cbs)

    async def _select_next_server(self) -> None:  # nats-py calls this before every (re)connect attempt
        if self._refresh is not None and self.is_reconnecting:
            if self._refused_since is not None and time.monotonic() - self._refused_since > self._auth_retry_s:
                self.gave_up_reason = (f"the server refused this node's credentials for {self._auth_retry_s:.0f}s "
                                       "(revoked, or rotated without installing the new credentials file)")
                log.error("nats: %s; closing the connection", self.gave_up_reason)
                raise nats.errors.NoServersError  # nats-py closes the client on this
            try:
                fresh = await self._refresh()
            except Exception as exc:  # noqa: BLE001 -- a file being rewritten or broken: the next attempt reads it again
                log.warning("nats: credentials not re-read, presenting the last ones: %s", exc)
                fresh = None
            if fresh is not None and fresh != self._nkeys_seed_str:
                self._nkeys_seed_str = fresh
                self._setup_nkeys_seed_connect()  # nats-py derives the public key it presents from the seed
        await super()._select_next_server()


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
    raise TimeoutError("the client gave up before it connected" if gave_up.is_set() else f"no answer within {deadline:g}s")


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
