"""A publish the server cannot store for lack of space fails at once with StorageFull, never after the 30 s retry budget.

nats-server answers such a write with an error (err_code 10023 "insufficient resources" once
JetStream's storage limit is used up): the server has spoken, so retrying it for the publisher's
whole budget only hid the incident for 30 s from the worker reporting its attempt and from the
leader deciding. The caller gets StorageFull, naming what to free, and decides when to try again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from cluster.leadership.term import Term
from eventbus.connection import connect
from eventbus.errors import BusError, StorageFull
from eventbus.events import WorkAttemptFailed
from eventbus.natsserver import NatsServer, ServerSpec, free_port
from eventbus.publisher import Publisher

pytestmark = pytest.mark.timeout(120)

PROMPT_S = 10.0  # well under the publisher's 30 s retry budget, generous for a loaded machine


def failed_attempt(n: int) -> WorkAttemptFailed:
    return WorkAttemptFailed(work_id=f"w-{n}", node="n1", attempt=1, reason="exit 1", stderr_tail="x" * 16_000)


async def test_a_publish_the_server_has_no_room_for_raises_storage_full_promptly_and_goes_through_once_there_is(
        tmp_path: Path) -> None:
    spec = ServerSpec(name="rr-full", port=free_port(), store_dir=str(tmp_path / "js"), max_file_store=1 << 20)
    with NatsServer(spec) as server:
        bus = await connect(server.url, node_id="n1")
        try:
            # Unbounded, so the server's storage limit is what runs out (as a full store does).
            await bus.js.add_stream(StreamConfig(name="RR_EVENTS", subjects=["rr.evt.>"]))
            publisher = Publisher(bus, ack_timeout=2.0)
            started = time.monotonic()
            with pytest.raises(StorageFull, match="WORK_ATTEMPT_FAILED not stored: JetStream storage is full.*free space"):
                for n in range(200):
                    await publisher.publish(failed_attempt(n))
            assert time.monotonic() - started < PROMPT_S, f"StorageFull only after {time.monotonic() - started:.1f}s"

            # A leader's decision surfaces it at once too, rather than retrying while its lease lasts.
            term = Term("scheduler", "n1", 1, None, publisher, lambda: True)
            started = time.monotonic()
            with pytest.raises(StorageFull):
                await term.publish(failed_attempt(500))
            assert time.monotonic() - started < PROMPT_S

            await bus.js.purge_stream("RR_EVENTS")  # room again (the real log is never purged: this is a scratch one)

            async def stored() -> bool:
                try:
                    await publisher.publish(failed_attempt(1000))
                except BusError:
                    return False
                return True

            deadline = time.monotonic() + 30
            while not await stored():
                assert time.monotonic() < deadline, "publishing never went through once there was room"
                await asyncio.sleep(0.2)
        finally:
            await bus.close()
