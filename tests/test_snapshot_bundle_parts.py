"""A service keeping several parts of the bundle starts from one load of the bundle's snapshot, not one per part."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import servicekit.snapshotting as snapshotting
from cluster.distribution.failures import FAILURES
from eventbus.connection import Bus
from eventbus.publisher import Publisher
from eventbus.snapshots import kept_name, save_kept
from projections import bundle, cluster, data, models
from projections.base import Folder, Projection
from servicekit.livefold import LiveFold
from servicekit.rebuild import state_at_seq
from servicekit.snapshotting import load_state, load_states, save_state
from tests.bus_harness import provisioned_bus
from tests.test_forensics import _incident

OWN_AT, BUNDLE_AT, NEWER_AT = 8, 16, 20  # of the incident's 24 records


def bundle_name(seq: int) -> str:
    return kept_name(bundle.PROJECTION.name, bundle.PROJECTION.version, seq)


async def fold_at(bus: Bus, projection: Projection[Any], seq: int | None = None) -> Any:
    return (await state_at_seq(bus, projection, seq, use_snapshot=False)).state


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """The incident's log, the bundle's snapshot at BUNDLE_AT and the data and cluster folds' own older ones at OWN_AT."""
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        await save_state(bus, bundle.PROJECTION, bundle.PROJECTION.finished(await fold_at(bus, bundle.PROJECTION, BUNDLE_AT)))
        for projection in (data.PROJECTION, cluster.PROJECTION):
            await save_state(bus, projection, await fold_at(bus, projection, OWN_AT))
        yield bus


@pytest.fixture
def loaded_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the snapshots loaded from the bucket, in order."""
    names: list[str] = []
    real = snapshotting.load_snapshot  # type: ignore[attr-defined]  # the name the module loads through

    async def counted(bus: Any, name: str, **kwargs: Any) -> bytes | None:
        names.append(name)
        return await real(bus, name, **kwargs)

    monkeypatch.setattr(snapshotting, "load_snapshot", counted)
    return names


async def test_a_live_fold_of_two_bundle_parts_loads_the_bundle_once_and_folds_on_to_the_same_state(
    bus: Bus, loaded_names: list[str]
) -> None:
    folders: list[Folder[Any]] = [Folder(data.PROJECTION), Folder(cluster.PROJECTION)]
    live = LiveFold(bus, folders, who="test")
    end = await live.start()
    assert loaded_names.count(bundle_name(BUNDLE_AT)) == 1, loaded_names
    assert (live.statistics().snapshot_seq, live.statistics().folded) == (BUNDLE_AT, end - BUNDLE_AT)
    for folder in folders:
        assert folder.projection.finished(folder.state) == folder.projection.finished(await fold_at(bus, folder.projection))


async def test_the_states_loaded_together_equal_those_loaded_one_by_one(bus: Bus, loaded_names: list[str]) -> None:
    projections: list[Projection[Any]] = [data.PROJECTION, FAILURES, cluster.PROJECTION, models.PROJECTION]
    together = await load_states(bus, projections, "test")
    assert loaded_names.count(bundle_name(BUNDLE_AT)) == 1, loaded_names
    alone = [await load_state(bus, projection, "test") for projection in projections]
    assert loaded_names.count(bundle_name(BUNDLE_AT)) == 1 + 3  # one by one: once per part
    assert together == alone
    assert [None if one is None else one.header.last_seq for one in together] == [BUNDLE_AT, None, BUNDLE_AT, BUNDLE_AT]
    assert together[0] is not None and together[0].state == bundle.PROJECTION.finished(
        await fold_at(bus, bundle.PROJECTION, BUNDLE_AT)).data


async def test_a_part_whose_own_snapshot_is_newer_starts_from_it_and_an_older_own_one_is_not_read(
    bus: Bus, loaded_names: list[str]
) -> None:
    await save_state(bus, models.PROJECTION, await fold_at(bus, models.PROJECTION, NEWER_AT))
    models_loaded, data_loaded = await load_states(bus, [models.PROJECTION, data.PROJECTION], "test")
    assert models_loaded is not None and models_loaded.header.last_seq == NEWER_AT
    assert models_loaded.state == await fold_at(bus, models.PROJECTION, NEWER_AT)
    assert data_loaded is not None and data_loaded.header.last_seq == BUNDLE_AT
    own = kept_name(data.PROJECTION.name, data.PROJECTION.version, OWN_AT)
    assert loaded_names == [kept_name(models.PROJECTION.name, models.PROJECTION.version, NEWER_AT), bundle_name(BUNDLE_AT)]
    assert own not in loaded_names  # the bundle's is newer and readable


async def test_an_unreadable_newest_bundle_is_skipped_once_for_every_part(bus: Bus, loaded_names: list[str]) -> None:
    await save_kept(bus, bundle.PROJECTION.name, bundle.PROJECTION.version, NEWER_AT, b"not a snapshot")
    loaded = await load_states(bus, [data.PROJECTION, cluster.PROJECTION], "test")
    assert [one.header.last_seq if one else None for one in loaded] == [BUNDLE_AT, BUNDLE_AT]
    assert loaded_names == [bundle_name(NEWER_AT), bundle_name(BUNDLE_AT)]


async def test_when_every_bundle_snapshot_is_unreadable_the_parts_start_from_their_own(
    bus: Bus, loaded_names: list[str]
) -> None:
    await save_kept(bus, bundle.PROJECTION.name, bundle.PROJECTION.version, BUNDLE_AT, b"not a snapshot")
    loaded = await load_states(bus, [data.PROJECTION, cluster.PROJECTION], "test")
    assert [one.header.last_seq if one else None for one in loaded] == [OWN_AT, OWN_AT]
    assert loaded_names.count(bundle_name(BUNDLE_AT)) == 1, loaded_names


async def test_a_part_with_its_own_snapshot_as_new_as_the_bundles_never_loads_the_bundle(
    bus: Bus, loaded_names: list[str]
) -> None:
    whole = bundle.PROJECTION.finished(await fold_at(bus, bundle.PROJECTION, BUNDLE_AT))
    await save_state(bus, models.PROJECTION, whole.models)
    loaded = await load_state(bus, models.PROJECTION, "test")
    assert loaded is not None and loaded.state == whole.models
    assert loaded_names and not any(name.startswith(bundle.PROJECTION.name) for name in loaded_names), loaded_names
