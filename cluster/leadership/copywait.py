"""A new leader waits for the server's copy of its acquiring lease write in the log before it announces itself.

The fences believe a LEADER_ELECTED only after the copy of the write that acquired its epoch
(projections/fencing.py), and they read the log in order: the election must come after the copy.
The server copies each write within milliseconds; the lease bucket keeps one message per key,
so a copy the server did not take before the first renewal is lost, and the term is given up.
A copy that is late because RR_EVENTS' source of the bucket has stalled (its server died) is
brought back by asking RR_EVENTS' leader to step down (sourcenudge.py says when).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cluster.leadership.sourcenudge import CHECK_EVERY_S, late_after, should_step_down
from eventbus.connection import Bus
from eventbus.errors import BusError
from eventbus.history import last_on
from eventbus.leasecopy import copy_subject, origin_of
from eventbus.sourcestall import source_status, step_down_leader
from eventbus.streams import EVENTS_STREAM, sources_of

log = logging.getLogger(__name__)

COPY_WAIT_MAX_S = 5.0  # a new leader waits at most this long (and at most its TTL) for its acquisition's copy
COPY_POLL_S = (0.005, 0.1)  # first and longest pause between two reads of the copy


class CopyWait:
    """Reads the log for the copy of one role's acquiring writes; warns once where the log does not copy them."""

    def __init__(self, bus: Bus, role: str, node_id: str, bucket_stream: str, wait_s: float, read_timeout_s: float) -> None:
        self._bus, self._role, self._node, self._bucket_stream = bus, role, node_id, bucket_stream
        self._wait_s, self._read_timeout_s = wait_s, read_timeout_s
        self._warned = False

    async def logged(self, epoch: int, may_act: Callable[[], bool]) -> bool:
        """Whether the log holds the copy of the acquiring write at revision `epoch`, waiting at most `wait_s`;
        True at once where the log does not source the lease bucket (an old stream config)."""
        if not await self.sourced():
            return True
        started = time.monotonic()
        deadline, look_at_source = started + self._wait_s, started + late_after(self._wait_s)
        pause = COPY_POLL_S[0]
        while may_act() and time.monotonic() < deadline:
            if time.monotonic() >= look_at_source:
                # Once per wait at most: a new stream leader sets the source up at once, or it does not help.
                asked = await self._step_down_if_stalled(time.monotonic() - started)
                look_at_source = deadline if asked else time.monotonic() + CHECK_EVERY_S
            revision = await self._last_copied()
            if revision == epoch:
                return True
            if revision is not None and revision > epoch:
                # A later write was copied first: the acquisition was replaced before the server took it.
                log.warning("%s: the %s lease was written again before its acquisition (revision %d) was copied into "
                            "the log", self._node, self._role, epoch)
                return False
            await asyncio.sleep(pause)
            pause = min(2 * pause, COPY_POLL_S[1])
        log.warning("%s: no copy of the %s lease's acquisition (revision %d) in the log within %.1f s",
                    self._node, self._role, epoch, self._wait_s)
        return False

    async def _step_down_if_stalled(self, waited_s: float) -> bool:
        """Ask RR_EVENTS' leader to step down where its source of the bucket is stalled; whether it was asked."""
        status = await source_status(self._bus, EVENTS_STREAM, self._bucket_stream, timeout=self._read_timeout_s)
        if status is None or not should_step_down(status, waited_s, self._wait_s):
            return False
        log.warning("%s: no copy of the %s lease's acquisition in the log after %.1f s, and %s has heard nothing from "
                    "its source %s for %s s (error: %s): asking %s's leader to step down, so that a new one sets the "
                    "source up", self._node, self._role, waited_s, EVENTS_STREAM, self._bucket_stream,
                    status.idle_s, status.error, EVENTS_STREAM)
        try:
            await step_down_leader(self._bus, EVENTS_STREAM, timeout=self._read_timeout_s)
        except BusError as exc:
            log.warning("%s: asking %s's leader to step down: %s", self._node, EVENTS_STREAM, exc)
        return True

    async def _last_copied(self) -> int | None:
        try:
            last = await last_on(self._bus, copy_subject(self._role), timeout=self._read_timeout_s)
        except BusError as exc:
            log.debug("reading the copies of the %s lease: %s", self._role, exc)
            return None
        origin = origin_of(last.headers) if last is not None else None
        return origin.revision if origin is not None else None

    async def sourced(self) -> bool:
        """Whether RR_EVENTS copies the lease bucket's writes (it does once `rr streams init` or `rr up` ran)."""
        try:
            info = await self._bus.js.stream_info(EVENTS_STREAM)
        except Exception as exc:  # noqa: BLE001 - unknown: wait for the copy, which is never wrong where it comes
            log.debug("reading %s's config: %s", EVENTS_STREAM, exc)
            return True
        if any(name == self._bucket_stream for name, _src, _dest in sources_of(info.config)):
            return True
        if not self._warned:
            self._warned = True
            log.warning("%s does not copy the lease bucket %s: elections are announced without their acquisition's "
                        "copy, and fences that saw copies before will not believe them; run `rr streams init` with "
                        "the admin credentials", EVENTS_STREAM, self._bucket_stream)
        return False
