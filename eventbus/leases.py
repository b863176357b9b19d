"""Leadership leases on a JetStream KV bucket: one key per singleton role, with a per-key TTL.

Every write is a compare-and-set on the key's last revision (`Nats-Expected-Last-Subject-Sequence`)
carrying `Nats-TTL`: acquiring expects the revision of the free key (0 when absent, or the
delete / expiry marker), renewing expects the holder's own last revision. Writes are raw
publishes to `$KV.<bucket>.<role>` because nats-py's `kv.update()` drops the key's TTL and its
`msg_ttl` is whole seconds anyway; the server truncates `Nats-TTL` to whole seconds too, so
TTLs here are whole seconds.

The bucket's stream revisions are the fencing epochs, so the bucket must never be deleted
and recreated: its revisions would start again at 1 and old epochs would look new.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from collections.abc import Callable

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, DiscardPolicy, StorageType, StreamConfig

from eventbus.connection import Bus
from eventbus.errors import BusError, BusUnavailable, ConcurrencyConflict
from eventbus.leaserecord import DEDUPE_WINDOW_S, LeaseRecord, LeaseState, LeaseValue, encode_value, parse_headers, record_from
from eventbus.tasks import wait_cancelled

__all__ = ["LeaseBucket", "LeaseRecord", "LeaseState", "LeaseValue", "parse_headers", "record_from"]

log = logging.getLogger(__name__)

DEFAULT_BUCKET = "rr_leases"
MARKER_TTL_S = 1.0  # how long an expiry marker stays; watchers see a lease expire through it
UPDATE_TIMEOUT_S = 2.0  # a user denied the update gets no answer at all: do not wait long for one
WRONG_LAST_SEQUENCE = (10071, 10164)
NO_MESSAGE_FOUND = 10037


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    seq: int = 0
    error: _ApiError | None = None


class _StoredMsg(msgspec.Struct):
    subject: str
    seq: int
    hdrs: str = ""
    data: str = ""
    time: dt.datetime | None = None


class _MsgGetReply(msgspec.Struct):
    message: _StoredMsg | None = None
    error: _ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_PubAck)
_get_decoder = msgspec.json.Decoder(_MsgGetReply)
_UNREACHABLE = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError, asyncio.TimeoutError)


class LeaseBucket:
    """The lease keys of every singleton role, in one KV bucket."""

    def __init__(self, bus: Bus, name: str = DEFAULT_BUCKET, *, replicas: int = 1, storage: str = "file") -> None:
        self._bus = bus
        self.name = name
        self.stream = f"KV_{name}"
        self._replicas = replicas
        self._storage = StorageType.FILE if storage == "file" else StorageType.MEMORY
        self.duplicate_window_s = DEDUPE_WINDOW_S  # as the server has it, once `ensure` has looked

    def subject(self, role: str) -> str:
        """The subject a role's lease key is written on."""
        return f"$KV.{self.name}.{role}"

    def _config(self) -> StreamConfig:
        return bucket_config(self.name, self._replicas, self._storage)

    async def ensure(self) -> None:
        """Create the bucket if it does not exist (idempotent, safe to race), and shorten its dedupe window where allowed."""
        try:
            info = await self._bus.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            try:
                await self._bus.js.add_stream(self._config())
                log.info("lease bucket %s created (R%d)", self.name, self._replicas)
            except nats.js.errors.BadRequestError:
                info = await self._bus.js.stream_info(self.stream)  # someone else created it first
                self.duplicate_window_s = float(info.config.duplicate_window or 0)
            except _UNREACHABLE as exc:
                raise BusUnavailable(f"JetStream did not answer creating lease bucket {self.name}: {exc}") from None
            return
        except _UNREACHABLE as exc:
            raise BusUnavailable(f"JetStream did not answer about lease bucket {self.name}: {exc}") from None
        if info.config.num_replicas != self._replicas:
            log.warning("lease bucket %s has %s replicas, config asks for %d; left as it is",
                        self.name, info.config.num_replicas, self._replicas)
        self.duplicate_window_s = float(info.config.duplicate_window or 0)
        if self.duplicate_window_s > DEDUPE_WINDOW_S:
            await self._shorten(info.config)

    async def shorten_window(self) -> str:
        """Give an existing bucket the short dedupe window (`rr streams init`): updated, unchanged or missing."""
        try:
            info = await self._bus.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            return "missing"
        except _UNREACHABLE as exc:
            raise BusUnavailable(f"JetStream did not answer about lease bucket {self.name}: {exc}") from None
        if float(info.config.duplicate_window or 0) <= DEDUPE_WINDOW_S:
            return "unchanged"
        return "updated" if await self._shorten(info.config) else "unchanged"

    async def _shorten(self, config: StreamConfig) -> bool:
        # Created before the window was set (2 minutes by default). Coordinators may not update the
        # bucket (servicekit/auth/permissions.py): admin's `rr streams init` does it there.
        try:
            await asyncio.wait_for(self._bus.js.update_stream(config, duplicate_window=DEDUPE_WINDOW_S), UPDATE_TIMEOUT_S)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            log.warning("lease bucket %s keeps its %.1f s dedupe window (%s): run `rr streams init` with the admin "
                        "credentials to shorten it", self.name, self.duplicate_window_s, exc or type(exc).__name__)
            return False
        log.info("lease bucket %s: dedupe window %.1f s -> %.1f s", self.name, self.duplicate_window_s, DEDUPE_WINDOW_S)
        self.duplicate_window_s = DEDUPE_WINDOW_S
        return True

    async def exists(self) -> bool:
        """Whether the bucket was ever created."""
        try:
            await self._bus.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            return False
        except _UNREACHABLE as exc:
            raise BusUnavailable(f"JetStream did not answer about lease bucket {self.name}: {exc}") from None
        return True

    async def read(self, role: str, *, timeout: float = 2.0) -> LeaseRecord:
        """The role's lease as the stream leader has it now."""
        request = msgspec.json.encode({"last_by_subj": self.subject(role)})
        reply = await self._request(f"$JS.API.STREAM.MSG.GET.{self.stream}", request, {}, timeout)
        answer = _get_decoder.decode(reply)
        if answer.error is not None:
            if answer.error.err_code == NO_MESSAGE_FOUND:
                return LeaseRecord(role=role, revision=0, state="absent")
            raise _api_error(f"reading lease {role}", answer.error)
        assert answer.message is not None
        stored = answer.message
        headers = parse_headers(base64.b64decode(stored.hdrs)) if stored.hdrs else {}
        return record_from(role, stored.seq, headers, base64.b64decode(stored.data), stored.time)

    async def roles(self) -> list[str]:
        """Roles that have a message in the bucket now (held, or recently freed)."""
        prefix = f"$KV.{self.name}."
        try:
            info = await self._bus.js.stream_info(self.stream, subjects_filter=f"{prefix}>")
        except nats.js.errors.NotFoundError:
            return []
        except _UNREACHABLE as exc:
            raise BusUnavailable(f"JetStream did not answer listing leases: {exc}") from None
        return sorted(s[len(prefix):] for s in (info.state.subjects or {}))

    async def acquire(self, role: str, value: LeaseValue, *, expect_revision: int, timeout: float, term_id: str = "") -> int:
        """Take a free lease whose last revision is `expect_revision`; returns the new revision (the epoch).

        `term_id`, when given, is sent as the write's Nats-Msg-Id, as on every renewal of the term:
        the log then keeps the acquisition's copy and drops its renewals' (eventbus/leasecopy.py).
        """
        return await self._write(role, value, expect_revision, timeout, term_id)

    async def renew(self, role: str, value: LeaseValue, *, revision: int, timeout: float, term_id: str = "") -> int:
        """Extend a held lease still at `revision` by its TTL; returns the new revision."""
        return await self._write(role, value, revision, timeout, term_id)

    async def release(self, role: str, *, revision: int, timeout: float = 2.0) -> None:
        """Delete the lease if it is still at `revision`, so a successor can take it at once."""
        headers = {"KV-Operation": "DEL", "Nats-Expected-Last-Subject-Sequence": str(revision)}
        self._check_ack(role, await self._request(self.subject(role), b"", headers, timeout), revision)

    async def _write(self, role: str, value: LeaseValue, expect: int, timeout: float, term_id: str) -> int:
        headers = {"Nats-Expected-Last-Subject-Sequence": str(expect), "Nats-TTL": f"{value.ttl_s}s"}
        if term_id:
            headers["Nats-Msg-Id"] = term_id
        reply = await self._request(self.subject(role), encode_value(value), headers, timeout)
        return self._check_ack(role, reply, expect)

    def _check_ack(self, role: str, reply: bytes, expect: int) -> int:
        ack = _ack_decoder.decode(reply)
        if ack.error is None:
            return ack.seq
        if ack.error.err_code in WRONG_LAST_SEQUENCE:
            raise ConcurrencyConflict(self.subject(role), expect, ack.error.description)
        raise _api_error(f"writing lease {role}", ack.error)

    async def _request(self, subject: str, data: bytes, headers: dict[str, str], timeout: float) -> bytes:
        try:
            msg = await self._bus.nc.request(subject, data, timeout=max(timeout, 0.001), headers=headers or None)
        except _UNREACHABLE as exc:
            raise BusUnavailable(f"no answer on {subject} within {timeout:.2f}s ({type(exc).__name__})") from None
        return bytes(msg.data)

    async def watch(self, role: str, on_record: Callable[[LeaseRecord], None]) -> None:
        """Call `on_record` with the key's current record, then with each change, until cancelled."""
        prefix_len = len(f"$KV.{self.name}.")

        async def on_msg(msg: Msg) -> None:
            meta = msg.metadata
            on_record(record_from(msg.subject[prefix_len:], meta.sequence.stream, msg.headers, msg.data, meta.timestamp))

        try:
            sub = await self._bus.js.subscribe(
                self.subject(role), stream=self.stream, ordered_consumer=True, cb=on_msg,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, idle_heartbeat=1.0,
            )
        except nats.js.errors.NotFoundError:
            raise BusUnavailable(f"lease bucket {self.name} does not exist") from None
        except _UNREACHABLE as exc:
            raise BusUnavailable(f"JetStream did not answer watching lease {role}: {exc}") from None
        try:
            await wait_cancelled()  # also one that subscribe's request lost
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass  # the connection is already gone; nothing is left to clean up


def bucket_config(name: str, replicas: int = 1, storage: StorageType = StorageType.FILE) -> StreamConfig:
    """The lease bucket's stream config."""
    return StreamConfig(
        name=f"KV_{name}",
        description="rr leadership leases: one key per singleton role; revisions are fencing epochs",
        subjects=[f"$KV.{name}.>"],
        max_msgs_per_subject=1,
        allow_msg_ttl=True,
        subject_delete_marker_ttl=MARKER_TTL_S,
        allow_direct=True,
        allow_rollup_hdrs=True,
        deny_delete=True,
        duplicate_window=DEDUPE_WINDOW_S,
        discard=DiscardPolicy.NEW,
        num_replicas=replicas,
        storage=storage,
    )


async def ensure_bucket(js: JetStreamContext, name: str, replicas: int) -> bool:
    """Create the lease bucket if it does not exist yet; whether this call created it.

    `rr streams init` / `rr up` create it before RR_EVENTS sources it: on a cluster, the server
    retries a source whose stream does not exist yet only after a growing pause, and a new
    leader's acquisition copied that late is lost.
    """
    try:
        await js.stream_info(f"KV_{name}")
        return False
    except nats.js.errors.NotFoundError:
        pass
    try:
        await js.add_stream(bucket_config(name, replicas))
    except nats.js.errors.BadRequestError:
        return False  # someone else created it first
    log.info("lease bucket %s created (R%d)", name, replicas)
    return True


def _api_error(what: str, error: _ApiError) -> BusError:
    if error.code == 503:
        return BusUnavailable(f"JetStream unavailable {what}: {error.description}")
    return BusError(f"{what}: {error.description} (err_code {error.err_code})")
