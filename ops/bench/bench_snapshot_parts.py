"""Where a cold start's snapshot time goes and what grows per record: the bundle and each part, in process.

bench_forensics times whole cold starts on a server; this folds bench_projection's fleet log in
process (no server: the figures the machine's load moves least) and, at each `--at` point, takes
the API's bundle snapshot as the services load it: its msgpack and stored bytes (compressed as
eventbus/snapshots.py stores it: zstd level 3 since "The API's bundle fetched" in README.md, zlib level
3 before; the keys still say "deflated", "deflate_s", "inflate_s" so that runs compare across the
change), the CPU of encoding, compressing, decompressing, decoding
(projections/snapshot.py, collector paused as the services run it) and settling every lazy value
(`pmap.settle`, what a service does after the load); then each part's bytes, and each field of a
part (a large one with its decode and settle CPU), so what grows with the log can be named. Timings are best of `--repeat` in process CPU.
Fetching is not measured here: bench_snapshot_fetch times it on a server.
With --services, each service's load of what it keeps (inflate, decode, settle) from the whole
bundle against its parts saved on their own (the API saves them beside the bundle).
Run: python -m ops.bench.bench_snapshot_parts --at 1000000,2000000 [--repeat 3] [--fields] [--services]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from eventbus.gcpause import without_gc
from eventbus.snapshots import packed as stored_form
from eventbus.snapshots import unpacked
from ops.bench.bench_projection import fleet_log
from ops.bench.common import emit, log
from projections import bundle, pmap, wire
from projections.bucketmap import BucketMap
from projections.snapshot import decode_snapshot, encode_snapshot

_encoder = msgspec.msgpack.Encoder(enc_hook=pmap.enc_hook)


def _hash_order(obj: Any) -> Any:
    if isinstance(obj, pmap.PMap):
        return obj.to_dict()  # as the maps were written before key order: their trie's order
    raise NotImplementedError(type(obj).__name__)


_hash_encoder = msgspec.msgpack.Encoder(enc_hook=_hash_order)


def best(repeat: int, action: Callable[[], Any]) -> tuple[float, Any]:
    """The least process CPU of `repeat` runs of `action`, and its last result."""
    spent, result = [], None
    for _ in range(repeat):
        clock = time.process_time()
        result = action()
        spent.append(time.process_time() - clock)
    return min(spent), result


def sizes(value: Any) -> dict[str, int]:
    """msgpack and stored (compressed) bytes of `value`."""
    packed = _encoder.encode(value)
    return {"msgpack": len(packed), "deflated": len(stored_form(packed))}


def part_costs(value: Any, repeat: int, kind: Any = None, by_key: bool = False) -> dict[str, float]:
    """A part's (or a field's, of type `kind`; `by_key` as wire.decode's) bytes, and the CPU of decoding it alone
    and of decoding and settling it."""
    packed = _encoder.encode(value)
    kind = type(value) if kind is None else kind

    def settled() -> None:
        pmap.settle(wire.decode(packed, kind, by_key))

    decode_s, _ = best(repeat, lambda: without_gc(wire.decode, packed, kind, by_key))
    settle_s, _ = best(repeat, lambda: without_gc(settled))
    return {"msgpack": len(packed), "deflated": len(stored_form(packed)), "decode_s": decode_s,
            "settle_s": max(settle_s - decode_s, 0.0)}


FIELD_COSTS_FROM = 20_000  # msgpack bytes: a field this large also gets its decode and settle CPU


def field_sizes(state: msgspec.Struct, repeat: int) -> dict[str, dict[str, Any]]:
    """Each field of a state Struct: its bytes, for a map its entries, and for a large one its decode and settle CPU."""
    out = {}
    for field in msgspec.structs.fields(state):
        value = getattr(state, field.name)
        entry: dict[str, Any] = sizes(value)
        if entry["msgpack"] >= FIELD_COSTS_FROM:
            entry = part_costs(value, repeat, field.type, (type(state), field.name) in wire.READ_BY_KEY_FIELDS)
        if isinstance(value, (pmap.PMap, dict, BucketMap)):
            entry["entries"] = len(value)
        out[field.name] = entry
    return out


def _settled(data: bytes) -> None:
    loaded = decode_snapshot(bundle.PROJECTION, data)
    assert loaded is not None, "the bundle snapshot did not decode"
    pmap.settle(loaded.state)  # what a service does right after the load


def snapshot_costs(state: bundle.ProjectionSet, repeat: int) -> dict[str, Any]:
    """Bytes of the bundle snapshot and CPU of each step a service's load takes, best of `repeat`."""
    encode_s, data = best(repeat, lambda: encode_snapshot(bundle.PROJECTION, state))
    deflate_s, stored = best(repeat, lambda: stored_form(data))
    inflate_s, _ = best(repeat, lambda: unpacked(stored))
    decode_s, loaded = best(repeat, lambda: without_gc(decode_snapshot, bundle.PROJECTION, data))
    assert loaded is not None, "the bundle snapshot did not decode"
    settle_s, _ = best(repeat, lambda: without_gc(_settled, data))
    hash_encode_s, hashed = best(repeat, lambda: _hash_encoder.encode(state))
    hash_deflate_s, hashed_stored = best(repeat, lambda: stored_form(hashed))
    hash_decode_s, _ = best(repeat, lambda: without_gc(decode_snapshot, bundle.PROJECTION, data[:len(data) - len(hashed)] + hashed))
    return {"msgpack": len(data), "deflated": len(stored), "encode_s": encode_s, "deflate_s": deflate_s,
            "inflate_s": inflate_s, "decode_s": decode_s, "settle_s": max(settle_s - decode_s, 0.0),
            "hash_order": {"deflated": len(hashed_stored), "encode_s": hash_encode_s, "deflate_s": hash_deflate_s,
                           "decode_s": hash_decode_s}}


# The bundle parts each service keeps (ops/bench/bench_forensics.py's services), besides folds of its own.
SERVICES = {"distributor_agent": ("models", "cluster"), "distribution_loop": ("models", "cluster", "taint"),
            "sync_agent": ("data", "taint"), "sync_planner": ("data", "cluster", "taint")}


def _load(projection: Any, stored: bytes) -> Any:
    loaded = decode_snapshot(projection, unpacked(stored))
    assert loaded is not None, f"the {projection.name} snapshot did not decode"
    return loaded.state


def service_loads(state: bundle.ProjectionSet, repeat: int) -> dict[str, dict[str, float]]:
    """CPU of inflating, decoding and settling what each service keeps: from the whole bundle, and from its parts' own snapshots."""
    whole = stored_form(encode_snapshot(bundle.PROJECTION, state))
    own = {name: stored_form(encode_snapshot(bundle.PARTS[name], getattr(state, name))) for name in bundle.PARTS}
    out = {}
    for service, names in SERVICES.items():
        def from_bundle(names: tuple[str, ...] = names) -> None:
            loaded = _load(bundle.PROJECTION, whole)
            for name in names:
                pmap.settle(getattr(loaded, name))

        def from_parts(names: tuple[str, ...] = names) -> None:
            for name in names:
                pmap.settle(_load(bundle.PARTS[name], own[name]))

        out[service] = {"bundle_s": best(repeat, lambda: without_gc(from_bundle))[0], "bundle_bytes": len(whole),
                        "parts_s": best(repeat, lambda: without_gc(from_parts))[0],
                        "parts_bytes": sum(len(own[name]) for name in names)}
    return out


def folded(points: list[int]) -> Iterator[tuple[int, bundle.ProjectionSet]]:
    """The bundle's state at each of `points` (ascending), folding the fleet log once."""
    opened = bundle.PROJECTION.folding(bundle.PROJECTION.initial())  # type: ignore[misc]
    stops = iter(points)
    stop = next(stops)
    for seq, event in enumerate(fleet_log(points[-1]), 1):
        opened.apply(event, seq)
        if seq == stop:
            yield seq, bundle.PROJECTION.finished(opened.state())
            stop = next(stops, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", default="1000000,2000000", help="positions to measure at, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fields", action="store_true", help="also each field of each part")
    parser.add_argument("--services", action="store_true", help="also each service's load: the whole bundle or its parts")
    args = parser.parse_args()
    points = sorted(int(p) for p in args.at.split(","))
    results = []
    for seq, state in folded(points):
        result: dict[str, Any] = {"records": seq, "bundle": snapshot_costs(state, args.repeat)}
        result["parts"] = {name: part_costs(getattr(state, name), args.repeat) for name in bundle.PARTS}
        if args.services:
            result["services"] = service_loads(state, args.repeat)
        if args.fields:
            result["fields"] = {name: field_sizes(getattr(state, name), args.repeat) for name in bundle.PARTS}
        log(f"{seq}: {result['bundle']}")
        results.append(result)
    emit({"bench": "snapshot_parts", "points": results})


if __name__ == "__main__":
    main()
