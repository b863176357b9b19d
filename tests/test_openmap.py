"""Maps held open while a rebuild folds: the same maps and the same states as folding event by event (pure, no server)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import events as ev
from eventbus.history import Record
from projections import openmap, work
from projections.base import Folder, Projection
from projections.openmap import OpenMap
from projections.pmap import PMap
from services.leader import queue
from tests.test_projections import LOGS, PROPERTY, _spoiled, lifecycles, records

KEYS = st.sampled_from([f"k{i}" for i in range(8)])
# Writes: ("set", key, value) or ("remove", key, unused).
WRITES = st.lists(st.tuples(st.sampled_from(["set", "remove"]), KEYS, st.integers(0, 9)), max_size=40)


@PROPERTY
@given(st.dictionaries(KEYS, st.integers(0, 9)), st.booleans(), WRITES)
def test_an_open_map_reads_and_closes_as_the_persistent_map_with_the_same_writes(
    start: dict[str, int], over_base: bool, writes: list[tuple[str, str, int]],
) -> None:
    origin: PMap[str, int] = PMap.over(dict(start)) if over_base else PMap(start)
    held, model = OpenMap(origin), dict(start)
    for verb, key, value in writes:
        if verb == "set":
            assert held.set(key, value) is held
            model[key] = value
        else:
            assert held.remove(key) is held
            model.pop(key, None)
        for key in [f"k{i}" for i in range(8)]:
            assert held.get(key, -1) == model.get(key, -1)
            assert (key in held) == (key in model)
        assert len(held) == len(model)
        assert dict(held.items()) == model
    assert held.closed() == PMap(model) and len(held.closed()) == len(model)
    assert origin == PMap(start)  # the map opened from never changes


@contextmanager
def opened_at_once() -> Iterator[None]:
    """Folding holders that open their maps after one event and close them every third."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openmap, "OPENS_AFTER", 1)
        patch.setattr(openmap, "CLOSES_EVERY", 3)
        yield


def _both_ways(projection: Projection[Any], start: Any, stored: list[Record], reads: set[int]) -> None:
    per_event = Folder(dataclasses.replace(projection, folding=None), start)
    held_open = Folder(projection, start)
    for i, record in enumerate(stored):
        per_event(record)
        held_open(record)
        if i in reads:
            assert held_open.state == per_event.state
    assert projection.finished(held_open.state) == projection.finished(per_event.state)


# Retiring soon, so that the open maps also retire items.
QUEUE_START = queue.QueueState(work=work.WorkState(retire_after=3))


@PROPERTY
@given(LOGS, st.data())
def test_the_queue_with_its_maps_open_equals_the_queue_folded_per_event(log: list[ev.Event], data_: st.DataObject) -> None:
    stored = _spoiled(log, data_)
    reads = set(data_.draw(st.lists(st.integers(0, len(stored)), max_size=5)))
    with opened_at_once():
        _both_ways(queue.PROJECTION, QUEUE_START, stored, reads)


def _recounted_failing_on_completion(counts: dict[str, int], was: Any, now: Any) -> dict[str, int]:
    # Raises after `_moved_on` wrote the item into the open map: the write must be taken back.
    if now is work.WorkStatus.COMPLETED:
        raise RuntimeError("a bug in the counts")
    return _RECOUNTED(counts, was, now)


_RECOUNTED = work._recounted


@PROPERTY
@given(lifecycles(), st.data())
def test_a_fold_error_while_the_maps_are_open_leaves_what_the_per_event_fold_leaves(
    log: list[ev.Event], data_: st.DataObject,
) -> None:
    # The work fold fails half-way through a completion, inside the queue's fold (its own `total`
    # records it, the queue's goes on); and the queue's own index step fails.
    reads = set(data_.draw(st.lists(st.integers(0, len(log)), max_size=3)))
    with opened_at_once(), pytest.MonkeyPatch.context() as patch, pytest.MonkeyPatch.context() as logs:
        logs.setattr("projections.base.log.warning", lambda *_: None)
        patch.setattr(work, "_recounted", _recounted_failing_on_completion)
        _both_ways(queue.PROJECTION, QUEUE_START, records(log), reads)
        patch.setattr(queue, "_indexed", _failing)
        _both_ways(queue.PROJECTION, QUEUE_START, records(log), reads)


def _failing(*_: Any) -> Any:
    raise RuntimeError("a bug in the indexes")
