"""A snapshot's state decodes in one typed pass (PMaps read as dicts) into exactly the state that was saved."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from cluster.distribution.failures import FAILURES
from eventbus import events as ev
from projections import bundle, wire
from projections.base import Projection, fold_events
from projections.pmap import PMap, enc_hook
from projections.snapshot import decode_snapshot, encode_snapshot, read_header
from projections.syncwork import SYNC_REQUESTS
from services.leader import queue
from tests.test_projections import LOGS, PROPERTY, numbered

SAVED: list[Projection[Any]] = [bundle.PROJECTION, *bundle.PARTS.values(), queue.PROJECTION, FAILURES, SYNC_REQUESTS]


@PROPERTY
@given(LOGS)
def test_every_saved_projection_decodes_to_the_state_it_encoded(log: list[ev.Event]) -> None:
    for projection in SAVED:
        state = fold_events(projection, numbered(log))
        loaded = decode_snapshot(projection, encode_snapshot(projection, state))
        assert loaded is not None and loaded.state == state, projection.name


class _Inner(msgspec.Struct, frozen=True):
    tags: PMap[str, int] = msgspec.field(default_factory=PMap)


class _Outer(msgspec.Struct, frozen=True, kw_only=True):
    plain: dict[str, int] = {}
    nested: PMap[str, _Inner] = msgspec.field(default_factory=PMap)
    maybe: _Inner | None = None
    many: tuple[_Inner, ...] = ()


def test_maps_inside_maps_options_and_tuples_come_back_as_pmaps_and_plain_structs_are_left_as_they_are() -> None:
    value = _Outer(plain={"a": 1}, nested=PMap({"x": _Inner(tags=PMap({"t": 2}))}), maybe=_Inner(tags=PMap({"u": 3})),
                   many=(_Inner(), _Inner(tags=PMap({"v": 4}))))
    decoded = wire.decode(msgspec.msgpack.encode(value, enc_hook=enc_hook), _Outer)
    assert decoded == value and isinstance(decoded.nested["x"].tags, PMap) and isinstance(decoded.many[1].tags, PMap)
    assert wire.wire_type(ev.WorkAdded) is ev.WorkAdded and wire.wire_type(dict[str, int]) == dict[str, int]


def _enveloped(projection: Projection[Any], state: Any) -> bytes:
    """A snapshot as written before the framing: one msgpack map {header, state}."""
    framed = encode_snapshot(projection, state)
    header = read_header(framed)
    return msgspec.msgpack.encode({"header": header, "state": msgspec.Raw(msgspec.msgpack.encode(state, enc_hook=enc_hook))})


@PROPERTY
@given(LOGS)
def test_a_snapshot_written_as_one_msgpack_map_before_the_framing_still_reads(log: list[ev.Event]) -> None:
    state = fold_events(bundle.PROJECTION, numbered(log))
    old = _enveloped(bundle.PROJECTION, state)
    assert old[:1] == b"\x82" and not old.startswith(encode_snapshot(bundle.PROJECTION, state)[:4])
    loaded = decode_snapshot(bundle.PROJECTION, old)
    assert loaded is not None and loaded.state == state and read_header(old) == loaded.header


def test_the_header_is_read_without_the_state_and_a_cut_or_foreign_snapshot_is_none() -> None:
    state = fold_events(bundle.PROJECTION, numbered([ev.LeaderElected(role="scheduler", node="n1", epoch=1, source="n1")]))
    data = encode_snapshot(bundle.PROJECTION, state)
    header = read_header(data[:len(data) // 2])  # the header is framed before the state: half the bytes suffice
    assert header is not None and header.projection == bundle.PROJECTION.name and header.last_seq == 1
    assert decode_snapshot(bundle.PROJECTION, data[:len(data) // 2]) is None
    for broken in (data[:6], data[:4] + b"\xff\xff\xff\xff" + data[8:], b"", b"not a snapshot"):
        assert read_header(broken) is None and decode_snapshot(bundle.PROJECTION, broken) is None
    assert decode_snapshot(queue.PROJECTION, data) is None  # another projection's


@PROPERTY
@given(LOGS, st.floats(0, 1))
def test_folding_on_from_a_decoded_snapshot_equals_folding_the_whole_log(log: list[ev.Event], cut: float) -> None:
    events = numbered(log)
    at = int(len(events) * cut)
    for projection in SAVED:
        loaded = decode_snapshot(projection, encode_snapshot(projection, fold_events(projection, events[:at])))
        assert loaded is not None
        assert fold_events(projection, events[at:], loaded.state) == fold_events(projection, events), projection.name
