"""bench_snapshot_parts names each large field's decode and settle CPU, and settles nothing a map read by key holds."""

from __future__ import annotations

import pytest

from ops.bench import bench_snapshot_parts
from ops.bench.bench_projection import fleet_log
from projections import bundle
from projections.base import fold_events
from tests.test_projections import numbered

pytestmark = pytest.mark.pure


def test_large_fields_get_their_decode_and_settle_cpu_and_small_ones_their_bytes() -> None:
    state = fold_events(bundle.PROJECTION, numbered(list(fleet_log(10_000))))
    fields = bench_snapshot_parts.field_sizes(state.taint, repeat=1)
    large = fields["batches"]
    assert large["msgpack"] >= bench_snapshot_parts.FIELD_COSTS_FROM and large["entries"] == len(state.taint.batches)
    assert large["decode_s"] > 0 and large["settle_s"] >= 0 and large["deflated"] < large["msgpack"]
    assert "decode_s" not in fields["last_seq"] and fields["last_seq"]["msgpack"] > 0

