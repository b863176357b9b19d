"""A rebuild's inlined path in `Folder` folds every record exactly as the general path does, for every projection.

The fast path takes a record whose body opens with its subject's tag and whose subject's tokens
equal the body's; everything else (broken bodies, another type's body, ids made subject-safe,
lease copies, oversized bodies) goes the general way. Both must give the same state, anomalies
included, and equal `fold_events` over the decoded events where every record is sound.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from eventbus import events as ev
from eventbus.history import Record
from projections import bundle
from projections.base import Folder, Projection, fold_events
from services.leader import queue
from tests.test_projections import LOGS, PROPERTY, numbered, records

PROJECTIONS: dict[str, Projection[Any]] = {**bundle.PARTS, "all": bundle.PROJECTION, "queue": queue.PROJECTION,
                                           "all_per_event": dataclasses.replace(bundle.PROJECTION, folding=None)}


def _general(projection: Projection[Any]) -> Folder[Any]:
    folder = Folder(projection)
    folder._fast = {}  # every record through `_decoded`: the path the fast one inlines
    return folder


def _spoil(record: Record, how: int, other: Record) -> Record:
    if how == 0:
        return Record(record.seq, record.subject, b'{"type":' + record.data)  # broken JSON after a good start
    if how == 1:
        return Record(record.seq, other.subject, record.data)  # another event's subject
    if how == 2:
        return Record(record.seq, record.subject, record.data[:-1] + b',"source":"forged"}')  # a duplicate key, last wins
    if how == 3:  # the tag last, not first: decoded by the union, the same event
        body = msgspec.json.decode(record.data)
        tag = body.pop("type")
        return Record(record.seq, record.subject, msgspec.json.encode({**body, "type": tag}))
    if how == 4:
        return Record(record.seq, record.subject, record.data[:-1] + b',"epoch":"x"}')  # a field of the wrong type
    return Record(record.seq, record.subject, record.data + b" " * (ev.MAX_EVENT_BYTES + 1 - len(record.data)))


@st.composite
def spoiled_logs(draw: st.DrawFn) -> list[Record]:
    sound = records(draw(LOGS))
    stored = list(sound)
    for i in draw(st.lists(st.integers(0, max(0, len(stored) - 1)), max_size=6)) if stored else ():
        stored[i] = _spoil(sound[i], draw(st.integers(0, 5)), sound[(i + 1) % len(sound)])
    return stored


@PROPERTY
@given(spoiled_logs(), st.data())
def test_the_inlined_path_folds_every_projection_as_the_general_path_spoiled_records_included(
    stored: list[Record], data_: st.DataObject
) -> None:
    reads = set(data_.draw(st.lists(st.integers(0, len(stored)), max_size=4)))
    for name, projection in PROJECTIONS.items():
        fast, general = Folder(projection), _general(projection)
        for i, record in enumerate(stored):
            fast(record)
            general(record)
            if i in reads:
                assert fast.state == general.state, name
        assert projection.finished(fast.state) == projection.finished(general.state), name


@PROPERTY
@given(LOGS)
def test_on_a_sound_log_the_inlined_path_equals_folding_the_events(log: list[ev.Event]) -> None:
    for name, projection in PROJECTIONS.items():
        folder = Folder(projection)
        for record in records(log):
            folder(record)
        assert projection.finished(folder.state) == fold_events(projection, numbered(log)), name


def test_a_subject_safe_id_takes_the_general_path_and_is_folded() -> None:
    # An id with a dot is written as '_' in its subject: the fast test differs, the general one agrees.
    added = ev.WorkAdded(work_id="w.1", work_type="selfplay", board_type="hex8", num_players=2, source="gpu-1")
    stamped = ev.stamp(added, "gpu-1")
    record = Record(1, stamped.subject(), ev.encode(stamped))
    assert record.subject.split(".")[3] == "w_1"
    folder = Folder(bundle.PARTS["work"])
    folder(record)
    assert folder.state.anomaly_count == 0 and folder.state == fold_events(bundle.PARTS["work"], [(1, stamped)])
