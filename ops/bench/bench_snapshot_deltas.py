"""Delta snapshots against full ones, in one process (no server): bytes per kept point, the worst fold under a byte budget, and the cost of a load.

Folds bench_forensics' fleet log once; at every `--every` records it encodes the bundle whole
and as a delta against the previous point, deflated as the bucket stores them. Then it plays the
services' saves and prunes (projections/snapshotchains.py, the same rules `prune` applies) for
full snapshots only and for chains (`--links`, the snapshots.delta_* defaults otherwise), under
each `--max-gib` budget, and reports what is kept, its bytes and the most records a point folds
past a usable one. Last, the newest chain's load: its base decoded, each delta applied, against
folding the same records from that base.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from eventbus.snapshots import packed
from ops.bench.bench_projection import fleet_log
from ops.bench.common import emit, log
from projections import bundle
from projections.base import fold_events
from projections.snapshot import decode_snapshot, encode_snapshot
from projections.snapshotchains import delta_due, plan_prune
from projections.snapshotdelta import apply_delta, encode_delta
from projections.snapshotplan import SnapshotSettings


class Point:
    """One interval's snapshot both ways: encoded and deflated sizes, and the bytes of the newest chain's points."""

    def __init__(self, seq: int, full: bytes, delta: bytes | None) -> None:
        self.seq = seq
        self.full_raw, self.full_stored = len(full), len(packed(full))
        self.delta_raw = len(delta) if delta is not None else 0
        self.delta_stored = len(packed(delta)) if delta is not None else 0


def play(points: list[Point], settings: SnapshotSettings, deltas: bool) -> dict[str, Any]:
    """Saves and prunes as a writer does, every point in order: what is kept at the end."""
    kept: dict[int, int] = {}
    sizes: dict[int, int] = {}
    links = chain_bytes = base_bytes = 0
    previous = 0
    for point in points:
        delta = deltas and previous in kept and delta_due(links, chain_bytes, base_bytes, most_links=settings.delta_links,
                                                         fraction=settings.delta_fraction, min_bytes=settings.delta_min_bytes)
        if delta:
            kept[point.seq], sizes[point.seq] = previous, point.delta_stored
            links, chain_bytes = links + 1, chain_bytes + point.delta_raw
        else:
            kept[point.seq], sizes[point.seq] = 0, point.full_stored
            links, chain_bytes, base_bytes = 0, 0, point.full_raw
        previous = point.seq
        plan = plan_prune(kept, sizes, 1, 0, settings)
        for seq in plan.dropped:
            del kept[seq], sizes[seq]
    stored = sum(sizes.values())
    return {"kept": len(kept), "bases": sum(1 for prev in kept.values() if not prev), "stored_mb": round(stored / 1e6, 1),
            "bytes_per_kept": round(stored / max(len(kept), 1)), "worst_fold": plan.worst,
            "density": None if plan.density is None else list(plan.density)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--links", type=int, nargs="+", default=[SnapshotSettings().delta_links],
                        help="snapshots.delta_links to play (the first also times the newest chain's load)")
    parser.add_argument("--max-gib", type=float, nargs="+", default=[SnapshotSettings().max_gib, 0.1])
    args = parser.parse_args()
    points: list[Point] = []
    state, previous, events = bundle.PROJECTION.initial(), None, fleet_log(args.events)
    tail: list[tuple[int, Any]] = []  # the records since the newest base, for the load's comparison
    chain_points: list[bytes] = []
    base_settings = SnapshotSettings(every_events=args.every, delta_links=args.links[0])
    links = chain_bytes = base_bytes = 0
    clock = time.perf_counter()
    for stop in range(args.every, args.events + 1, args.every):
        batch = [(seq, next(events)) for seq in range(state.last_seq + 1, stop + 1)]
        state = fold_events(bundle.PROJECTION, batch, state)
        full = encode_snapshot(bundle.PROJECTION, state)
        delta = None if previous is None else encode_delta(bundle.PROJECTION, previous, state)
        points.append(Point(stop, full, delta))
        if delta is not None and delta_due(links, chain_bytes, base_bytes, most_links=base_settings.delta_links,
                                           fraction=base_settings.delta_fraction, min_bytes=base_settings.delta_min_bytes):
            links, chain_bytes = links + 1, chain_bytes + len(delta)
            chain_points.append(delta)
            tail += batch
        else:
            links, chain_bytes, base_bytes = 0, 0, len(full)
            chain_points, tail = [full], []
        previous = state
        if stop % (args.every * 20) == 0:
            log(f"{stop:,}: full {points[-1].full_stored / 1e6:.1f} MB, delta {points[-1].delta_stored / 1e3:.0f} kB deflated "
                f"({time.perf_counter() - clock:.0f}s)")
    result: dict[str, Any] = {"bench": "snapshot_deltas", "events": args.events, "every": args.every, "links": args.links}
    newest = points[-1]
    result["newest_full_stored_mb"] = round(newest.full_stored / 1e6, 2)
    result["newest_delta_stored_kb"] = round(newest.delta_stored / 1e3, 1)
    result["delta_stored_kb_mean"] = round(sum(p.delta_stored for p in points[1:]) / max(len(points) - 1, 1) / 1e3, 1)
    for gib in args.max_gib:
        settings = SnapshotSettings(every_events=args.every, max_kept=10_000, max_gib=gib, delta_links=args.links[0])
        result[f"full_only_{gib:g}gib"] = play(points, settings, deltas=False)
        log(f"{gib:g} GiB: full only {result[f'full_only_{gib:g}gib']}")
        for links in args.links:
            settings = SnapshotSettings(every_events=args.every, max_kept=10_000, max_gib=gib, delta_links=links)
            result[f"deltas_{links}_{gib:g}gib"] = play(points, settings, deltas=True)
            log(f"{gib:g} GiB, {links} links: {result[f'deltas_{links}_{gib:g}gib']}")
    result |= _load_cost(chain_points, tail)
    emit(result)


def _load_cost(chain_points: list[bytes], tail: list[tuple[int, Any]]) -> dict[str, Any]:
    # The newest chain: decode its base, apply its deltas one by one; against folding its records from the base.
    clock = time.perf_counter()
    loaded = decode_snapshot(bundle.PROJECTION, chain_points[0])
    decode_s = time.perf_counter() - clock
    assert loaded is not None
    state = base = loaded.state
    clock = time.perf_counter()
    for data in chain_points[1:]:
        moved = apply_delta(bundle.PROJECTION, state, data)
        assert moved is not None
        state = moved.state
    apply_s = time.perf_counter() - clock
    clock = time.perf_counter()
    folded = fold_events(bundle.PROJECTION, tail, base)
    fold_s = time.perf_counter() - clock
    assert folded == state, "the chain's state differs from the fold's"
    return {"load_base_decode_s": round(decode_s, 3), "load_deltas": len(chain_points) - 1, "load_deltas_apply_s": round(apply_s, 3),
            "fold_same_records_s": round(fold_s, 3), "fold_same_records": len(tail),
            "load_bytes_base_mb": round(len(chain_points[0]) / 1e6, 1),
            "load_bytes_deltas_mb": round(sum(map(len, chain_points[1:])) / 1e6, 2)}


if __name__ == "__main__":
    main()
