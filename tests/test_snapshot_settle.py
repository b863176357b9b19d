"""Settling a loaded snapshot decodes the maps folds go over whole, and leaves those only read by key to be decoded when read."""

from __future__ import annotations

from typing import Any

import msgspec

from ops.bench.bench_projection import fleet_log
from projections import data, models
from projections.base import Projection, fold_events
from projections.pmap import PMap, settle
from projections.snapshot import decode_snapshot, encode_snapshot
from tests.test_projections import numbered


def _still_msgpack(bindings: PMap[str, object]) -> int:
    return sum(type(value) is msgspec.Raw for value in bindings._base.values())


def test_attempts_stay_msgpack_after_settling_and_read_as_they_were_saved() -> None:
    log = numbered(list(fleet_log(3_000)))
    projections: list[Projection[Any]] = [data.PROJECTION, models.PROJECTION]
    for projection in projections:
        state = fold_events(projection, log)
        loaded = decode_snapshot(projection, encode_snapshot(projection, state))
        assert loaded is not None
        settle(loaded.state)
        attempts = loaded.state.attempts.items
        assert len(attempts) > 100 and _still_msgpack(attempts) == len(attempts), projection.name
        if projection is data.PROJECTION:  # a map gone over whole (a plan, a recount) is decoded
            assert len(loaded.state.batches) > 100 and _still_msgpack(loaded.state.batches) == 0
        work_id = sorted(state.attempts.items.keys())[len(attempts) // 2]
        assert attempts[work_id] == state.attempts.items[work_id] and _still_msgpack(attempts) == len(attempts) - 1
        assert loaded.state == state  # equality goes over every value: all decoded, nothing lost
