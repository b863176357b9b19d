"""A live fold asked to settle after its catch-up (the API) starts serving with its snapshot's values undecoded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from eventbus.events import WorkAdded
from eventbus.publisher import Publisher
from projections import work
from projections.base import Folder
from projections.pmap import PMap
from servicekit.livefold import LiveFold, aggregate_subjects
from servicekit.snapshotting import save_state
from tests.bus_harness import provisioned_bus
from tests.test_livefold import following, full_fold


def _still_msgpack(bindings: PMap[str, Any]) -> int:
    return sum(type(value) is msgspec.Raw for value in bindings._base.values())


def added(work_id: str) -> WorkAdded:
    return WorkAdded(work_id=work_id, work_type="selfplay", board_type="hex8", num_players=2)


async def test_the_catch_up_leaves_the_values_undecoded_and_following_decodes_them_in_a_thread(
    nats_url: str, eventually: Callable[..., Any]
) -> None:
    async with provisioned_bus(nats_url) as bus:
        pub = Publisher(bus)
        await pub.publish_many([added(f"n{i}") for i in range(20)])
        await save_state(bus, work.PROJECTION, await full_fold(bus))
        await pub.publish_many([added(f"m{i}") for i in range(3)])

        settled_now, later = Folder(work.PROJECTION), Folder(work.PROJECTION)
        await LiveFold(bus, [settled_now], aggregate_subjects("work"), who="test").start()
        live = LiveFold(bus, [later], aggregate_subjects("work"), who="test", settle_after_catch_up=True)
        await live.start()
        assert _still_msgpack(settled_now.state.items) == 0
        assert _still_msgpack(later.state.items) == 20  # the snapshot's items: decoded when read, or by `follow`
        async with following(live):
            await eventually(lambda: _still_msgpack(later.state.items) == 0)
            await pub.publish_many([added("after")])
            await eventually(lambda: "after" in later.state.items)
        assert work.PROJECTION.finished(later.state) == await full_fold(bus)
