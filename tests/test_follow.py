"""Following the log or a lease live: a follower ends when cancelled, even when the cancellation reached it inside the client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from eventbus import orderedread
from eventbus.connection import Bus
from eventbus.follow import follow
from eventbus.leases import LeaseBucket
from eventbus.tasks import wait_cancelled

pytestmark = pytest.mark.timeout(60)


async def _log(bus: Bus) -> None:
    await follow(bus, lambda record: None, start_seq=1)


async def _lease(bus: Bus) -> None:
    leases = LeaseBucket(bus, "t_follow_leases")
    await leases.ensure()
    await leases.watch("scheduler", lambda record: None)


@pytest.mark.parametrize(("following", "request_name", "direct"), [
    (_log, "add_consumer", True), (_log, "subscribe", False), (_lease, "subscribe", True),
], ids=["the log, straight from the parser", "the log, by nats-py's ordered consumer", "a lease"])
async def test_a_follower_cancelled_as_its_subscription_is_answered_still_ends(
    bus: Bus, monkeypatch: pytest.MonkeyPatch, following: Callable[[Bus], Coroutine[Any, Any, None]], request_name: str,
    direct: bool,
) -> None:
    # Python 3.11's asyncio.wait_for, under the client's subscribe, returns the server's reply and
    # drops a cancellation that lands with it (the task still counts it as requested). A stopped
    # leader's follower then waited for a second cancel that never came (its TaskGroup sends one).
    # Following the log straight from the parser, the consumer's creation is that request.
    monkeypatch.setattr(orderedread, "NATS_PY_HOOKS", direct)
    real = getattr(bus.js, request_name)
    answered = asyncio.Event()

    async def subscribe_losing_a_cancel(*args: Any, **kwargs: Any) -> Any:
        sub = await real(*args, **kwargs)
        answered.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.get_running_loop().create_future()  # the cancel arrives with the reply ...
        return sub  # ... and wait_for returns the reply instead

    monkeypatch.setattr(bus.js, request_name, subscribe_losing_a_cancel)
    task = asyncio.create_task(following(bus))
    await asyncio.wait_for(answered.wait(), timeout=10)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=10)
    assert task in done, "the follower waited for a second cancellation"
    assert task.cancelled()


async def test_wait_cancelled_waits_for_a_cancellation_and_no_longer_once_one_was_requested() -> None:
    waiting = asyncio.create_task(wait_cancelled())
    done, _ = await asyncio.wait([waiting], timeout=0.2)
    assert not done  # nothing asked it to stop
    waiting.cancel()
    await asyncio.wait([waiting], timeout=5)
    assert waiting.cancelled()
