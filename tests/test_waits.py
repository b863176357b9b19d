"""until_first returns with the first wait to finish and leaves none of the others running (servicekit/waits.py)."""

from __future__ import annotations

import asyncio

import pytest

from servicekit.waits import until_first


async def test_the_first_to_finish_ends_the_wait_and_the_others_are_cancelled() -> None:
    news, stopping = asyncio.Event(), asyncio.Event()
    never = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(until_first(news.wait(), stopping.wait(), never))
    await asyncio.sleep(0)
    assert not waiting.done()
    stopping.set()
    await asyncio.wait_for(waiting, 5)
    assert never.cancelled()


async def test_a_wait_that_times_out_ends_it_like_any_other() -> None:
    stopping = asyncio.Event()
    await asyncio.wait_for(until_first(asyncio.sleep(0.01), stopping.wait()), 5)
    assert not stopping.is_set()


async def test_cancelling_the_wait_cancels_every_wait_it_holds() -> None:
    first, second = (asyncio.get_running_loop().create_future() for _ in range(2))
    waiting = asyncio.ensure_future(until_first(first, second))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert first.cancelled() and second.cancelled()

