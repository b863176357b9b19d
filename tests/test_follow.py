"""Following the log live: a follower ends when cancelled, even when the cancellation reached it inside the client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventbus.connection import Bus
from eventbus.follow import follow
from eventbus.history import Record

pytestmark = pytest.mark.timeout(60)


async def test_a_follower_cancelled_as_its_subscription_is_answered_still_ends(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python 3.11's asyncio.wait_for, under the client's subscribe, returns the server's reply and
    # drops a cancellation that lands with it (the task still counts it as requested). A stopped
    # leader's follower then waited for a second cancel that never came (its TaskGroup sends one).
    real = bus.js.subscribe
    answered = asyncio.Event()

    async def subscribe_losing_a_cancel(*args: Any, **kwargs: Any) -> Any:
        sub = await real(*args, **kwargs)
        answered.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.get_running_loop().create_future()  # the cancel arrives with the reply ...
        return sub  # ... and wait_for returns the reply instead

    monkeypatch.setattr(bus.js, "subscribe", subscribe_losing_a_cancel)
    records: list[Record] = []
    task = asyncio.create_task(follow(bus, records.append, start_seq=1))
    await asyncio.wait_for(answered.wait(), timeout=10)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=10)
    assert task in done, "the follower waited for a second cancellation"
    assert task.cancelled()
