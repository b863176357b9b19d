"""CONFIG_CHANGED: key-by-key differences of the rr config and hosts file, recorded by the leader, with the log as the store."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from pathlib import Path

import pytest

from cluster.leadership.term import Term
from config.settings import load_config
from eventbus.connection import Bus
from eventbus.events import CHANGES_MAX, MAX_EVENT_BYTES, REF_MAX, ConfigChange, ConfigChanged, encode
from eventbus.history import events
from servicekit.configwatch.diff import batches, bounded, changes, flatten, recorded
from servicekit.configwatch.loop import config_watch_loop
from tests.bus_harness import provisioned_bus
from tests.leader_harness import leader_loop_running
from tests.lostcancel import LosingACancel, stopped_on_one_cancel, the_task_running

pytestmark = pytest.mark.timeout(60)


def test_nested_keys_flatten_to_dotted_paths_and_lists_stay_one_value() -> None:
    assert flatten({"scheduler": {"max_attempts": 3, "curriculum": {"hex8_2p": 2.0}}, "hosts_file": None, "x": [1, 2]}) == {
        "scheduler.max_attempts": "3", "scheduler.curriculum.hex8_2p": "2.0", "hosts_file": "null", "x": "[1,2]"}
    assert flatten({}) == {} and flatten({"empty": {}}) == {"empty": "{}"}


def test_changes_name_added_removed_and_changed_keys_with_old_and_new_values() -> None:
    old = {"a": "1", "b": "2", "c": "3"}
    new = {"a": "1", "b": "20", "d": "4"}
    assert changes(old, new) == [ConfigChange(key="b", old="2", new="20"), ConfigChange(key="c", old="3", new=None),
                                 ConfigChange(key="d", old=None, new="4")]
    assert changes(new, new) == []


def test_the_last_recorded_content_is_the_changes_folded_in_order() -> None:
    first = {"a": "1", "b": "2"}
    second = {"a": "1", "c": "3"}
    history = [ConfigChanged(name="rr-config", changes=changes({}, first)), ConfigChanged(name="rr-config", changes=changes(first, second))]
    assert recorded(history) == second


async def _changes_of(bus: Bus, name: str) -> list[ConfigChanged]:
    return [e async for _s, e in events(bus) if isinstance(e, ConfigChanged) and e.name == name]


def watching(bus: Bus, nats_url: str, config_path: Path):
    """The config watch of a leader of epoch 7 reading `config_path`, checking every 0.1 s."""
    return leader_loop_running(bus, functools.partial(config_watch_loop, check_every_s=0.1), load_config(config_path),
                               node="lead", epoch=7, nats_url=nats_url, config_path=str(config_path), announce=False)


async def test_the_leader_records_a_config_once_then_each_change_and_nothing_for_an_unchanged_restart(
        nats_url: str, tmp_path: Path, eventually) -> None:
    config = tmp_path / "rr.yaml"
    config.write_text("scheduler:\n  max_attempts: 3\n")
    async with provisioned_bus(nats_url) as bus:
        await _record_and_restart(bus, nats_url, config, eventually)


async def _record_and_restart(bus: Bus, nats_url: str, config: Path, eventually) -> None:
    async with watching(bus, nats_url, config):
        [first] = await eventually(lambda: _changes_of(bus, "rr-config"))
        assert first.changes == [ConfigChange(key="scheduler.max_attempts", old=None, new="3")] and first.epoch == 7
        config.write_text("scheduler:\n  max_attempts: 5\nsync:\n  max_batch_age_h: 12\n")

        async def two() -> list[ConfigChanged] | None:
            found = await _changes_of(bus, "rr-config")
            return found if len(found) == 2 else None

        _first, second = await eventually(two)
        assert second.changes == [ConfigChange(key="scheduler.max_attempts", old="3", new="5"),
                                  ConfigChange(key="sync.max_batch_age_h", old=None, new="12")]
        config.write_text("scheduler:\n  max_attempts: [broken\n")  # unreadable: nothing recorded, no crash
        await asyncio.sleep(0.5)
    # A new term on the same file finds the log up to date and says nothing.
    config.write_text("scheduler:\n  max_attempts: 5\nsync:\n  max_batch_age_h: 12\n")
    async with watching(bus, nats_url, config):
        await asyncio.sleep(0.5)
    assert len(await _changes_of(bus, "rr-config")) == 2


def test_large_values_and_keys_are_recorded_as_their_hash_and_many_changes_are_spread_over_bounded_events() -> None:
    big = {"hosts": {f"node-{i:05d}": {"cpus": 8} for i in range(300)}, "labels": {"k" * 400: "v"}, "x": ["y" * 5000]}
    flat = bounded(flatten(big))
    assert json.loads(flat["x"]) == {"sha256": hashlib.sha256(json.dumps(["y" * 5000]).encode()).hexdigest(), "bytes": 5004}
    [long_key] = [k for k in flat if k.startswith("labels.")]
    assert len(long_key) <= REF_MAX
    parts = batches(changes({}, flat))
    assert len(parts) == -(-len(flat) // CHANGES_MAX) and all(len(p) <= CHANGES_MAX for p in parts)
    history = [ConfigChanged(name="hosts", changes=p) for p in parts]
    assert all(len(encode(e)) < MAX_EVENT_BYTES for e in history)
    assert recorded(history) == flat


async def test_an_invalid_hosts_file_is_refused_once_and_never_written_into_the_log(
        nats_url: str, tmp_path: Path, eventually, caplog: pytest.LogCaptureFixture) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  gpu-1:\n    status: ready\n")
    config = tmp_path / "rr.yaml"
    config.write_text(f"hosts_file: {hosts}\n")
    async with provisioned_bus(nats_url) as bus:
        async with watching(bus, nats_url, config):
            [first] = await eventually(lambda: _changes_of(bus, "hosts"))
            assert first.changes == [ConfigChange(key="hosts.gpu-1.status", old=None, new='"ready"')]
            with caplog.at_level(logging.ERROR, logger="servicekit.configwatch.loop"):
                hosts.write_text("hosts:\n  gpu-1:\n    status: bogus\n")
                await eventually(lambda: any("refused" in r.getMessage() for r in caplog.records), timeout=10)
                await asyncio.sleep(0.5)  # several more checks of the same bad file
            hosts.write_text("hosts:\n  gpu-1:\n    status: maintenance\n")

            async def two() -> list[ConfigChanged] | None:
                found = await _changes_of(bus, "hosts")
                return found if len(found) == 2 else None

            _first, second = await eventually(two)
        assert second.changes == [ConfigChange(key="hosts.gpu-1.status", old='"ready"', new='"maintenance"')]
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "hosts.gpu-1.status" in refusals[0] and "\n" not in refusals[0], refusals


async def test_a_config_watch_stopped_while_it_records_a_change_ends_on_that_one_cancel(
        nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python 3.11's wait_for, under the publish, returns the ack and drops a cancellation that lands
    # with it; the watch then went on reading the files every check as a deposed leader.
    losing = LosingACancel(Term.publish)
    monkeypatch.setattr(Term, "publish", losing)
    config = tmp_path / "rr.yaml"
    config.write_text("scheduler:\n  max_attempts: 3\n")
    async with provisioned_bus(nats_url) as bus, watching(bus, nats_url, config):
        watch = the_task_running(config_watch_loop)
        assert await stopped_on_one_cancel(watch, losing), "the config watch went on after its cancellation"
