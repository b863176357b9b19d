"""The API saves the services' bundle parts beside the bundle, so a service starts from its own parts and never loads the bundle."""

from __future__ import annotations

from typing import Any

from eventbus.publisher import Publisher
from eventbus.snapshots import kept_name, kept_snapshots
from projections import bundle, cluster, data, models, taint
from projections.base import Folder
from servicekit.livefold import LiveFold
from tests.api_harness import running_api, wait_caught_up
from tests.test_forensics import _incident
from tests.test_snapshot_bundle_parts import fold_at, loaded_names

__all__ = ["loaded_names"]  # the fixture, used by name below


async def test_each_service_part_is_saved_beside_each_bundle_snapshot_and_a_service_loads_only_its_parts(
    nats_url: str, eventually: Any, loaded_names: list[str]
) -> None:
    async with running_api(nats_url, snapshot_every_events=10, snapshot_min_interval_s=0) as api:
        published = await Publisher(api.bus).publish_many(_incident())
        await wait_caught_up(api.base, published[-1].seq)

        async def parts_beside_the_bundle() -> bool:
            saved = set(await kept_snapshots(api.bus, bundle.PROJECTION.name, bundle.PROJECTION.version))
            if not saved or max(saved) < 20:
                return False
            beside = [set(await kept_snapshots(api.bus, part.name, part.version)) for part, _ in bundle.saved_parts()]
            return all(saved <= kept for kept in beside)

        await eventually(parts_beside_the_bundle, timeout=60, message="each service part saved at each bundle snapshot's position")
        newest = max(await kept_snapshots(api.bus, bundle.PROJECTION.name, bundle.PROJECTION.version))
        # A planner's folds (data, cluster, taint) and a distributor's (models): their parts, not the bundle.
        folders: list[Folder[Any]] = [Folder(p) for p in (data.PROJECTION, cluster.PROJECTION, taint.PROJECTION, models.PROJECTION)]
        live = LiveFold(api.bus, folders, who="test")
        loaded_names.clear()  # what the API's own start read
        await live.start()
        assert loaded_names == [kept_name(f.projection.name, f.projection.version, newest) for f in folders]
        assert live.statistics().snapshot_seq == newest
        for folder in folders:
            assert folder.projection.finished(folder.state) == folder.projection.finished(await fold_at(api.bus, folder.projection))
