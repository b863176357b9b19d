"""The event catalog: every type survives the wire, the log and a consumer; old and new schemas still decode."""

from __future__ import annotations

import datetime as dt
import json
import re

import msgspec
import msgspec.inspect as mi
import nats
import pytest

from eventbus.consumer import Delivery, EventConsumer
from eventbus.errors import InvalidEvent
from eventbus.events import (
    EVENT_TYPES,
    AnyEvent,
    Event,
    HostOnline,
    HostResources,
    WorkAdded,
    decode,
    encode,
    stamp,
)
from eventbus.history import Record, replay
from eventbus.publisher import Publisher
from tests.bus_harness import provisioned_bus, quick_spec, running
from tests.event_samples import ENVELOPE, all_samples, sample_event

ALL_KINDS = list(EVENT_TYPES.values())


def upper_snake(name: str) -> str:
    """WorkAttemptFailed -> WORK_ATTEMPT_FAILED."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


# ---- the catalog, without a server ------------------------------------------------------


def test_catalog_lists_every_member_of_the_union_once() -> None:
    assert set(EVENT_TYPES.values()) == set(AnyEvent.__args__)  # type: ignore[attr-defined]
    assert len(EVENT_TYPES) == len(AnyEvent.__args__)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.type_name())
def test_wire_name_is_the_upper_case_class_name(kind: type[Event]) -> None:
    assert kind.type_name() == upper_snake(kind.__name__)
    assert EVENT_TYPES[kind.type_name()] is kind


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.type_name())
def test_every_type_names_its_aggregate_and_key(kind: type[Event]) -> None:
    assert kind.aggregate, f"{kind.__name__} has no aggregate"
    assert kind.key_field in kind.__struct_fields__, f"{kind.__name__}.key_field is not one of its fields"


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.type_name())
def test_stamped_sample_round_trips_as_one_line_of_json(kind: type[Event]) -> None:
    event = stamp(sample_event(kind), "node-a")
    wire = encode(event)
    assert b"\n" not in wire
    obj = json.loads(wire)
    assert obj["type"] == kind.type_name()
    assert obj["id"] == event.id
    assert decode(wire) == event


def test_stamp_fills_the_envelope_once_and_keeps_a_given_source() -> None:
    event = stamp(sample_event(WorkAdded, trace=None), "node-a", trace="00-abc-def-01")
    assert event.id.startswith("node-a:")
    assert event.source == "node-a"
    assert event.trace == "00-abc-def-01"
    assert event.ts is not None and event.ts.utcoffset() == dt.timedelta(0)
    assert stamp(event, "node-b") is event, "a stamped event keeps its id, so a retry stays idempotent"
    relayed = stamp(sample_event(HostOnline, source="gpu-7"), "node-a")
    assert relayed.source == "gpu-7"
    assert relayed.id.startswith("node-a:"), "ids are namespaced by the publisher, not the source"


def test_ids_are_unique_per_stamp() -> None:
    ids = {stamp(sample_event(WorkAdded), "node-a").id for _ in range(1000)}
    assert len(ids) == 1000


# ---- schema evolution -----------------------------------------------------------------


def test_work_added_from_an_older_schema_decodes_with_defaults() -> None:
    old = {
        "type": "WORK_ADDED",
        "id": "node-a:1",
        "ts": "2024-01-02T03:04:05Z",
        "source": "node-a",
        "work_id": "w-1",
        "work_type": "selfplay",
        "board_type": "square8",
        "num_players": 2,
    }  # no v, epoch, trace, num_games, priority, target_node, params, requested_by
    event = decode(json.dumps(old).encode())
    assert isinstance(event, WorkAdded)
    assert (event.params, event.priority, event.target_node, event.requested_by) == ({}, None, None, "")
    assert (event.v, event.epoch, event.trace, event.num_games) == (1, None, None, 0)
    assert event.ts == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.type_name())
def test_an_event_with_only_its_required_fields_decodes(kind: type[Event]) -> None:
    # What the oldest writer of each type could have sent: every defaulted field absent.
    full = msgspec.to_builtins(sample_event(kind))
    info = mi.type_info(kind)
    assert isinstance(info, mi.StructType)
    required = {f.name for f in info.fields if f.required}
    minimal = {k: v for k, v in full.items() if k in required or k == "type"}
    event = decode(json.dumps(minimal).encode())
    assert type(event) is kind
    for name in required:
        assert getattr(event, name) == getattr(sample_event(kind), name)


def test_fields_from_a_newer_schema_are_ignored() -> None:
    newer = msgspec.to_builtins(stamp(sample_event(HostOnline), "node-a"))
    newer["rack"] = "r-12"  # a field added by a newer writer
    newer["resources"]["npu_count"] = 4  # also inside a nested value object
    newer["v"] = 2
    event = decode(json.dumps(newer).encode())
    assert isinstance(event, HostOnline)
    assert event.v == 2
    assert isinstance(event.resources, HostResources)
    assert event.resources == sample_event(HostOnline).resources


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (b"\x00\xffgarbage", "malformed"),
        (b"", "truncated"),
        (b"[1, 2]", "object"),
        (b'{"id": "x"}', "`type`"),
        (b'{"type": "NO_SUCH_EVENT"}', "NO_SUCH_EVENT"),
        (b'{"type": "WORK_ADDED", "work_type": "selfplay"}', "`work_id`"),
        (
            b'{"type": "WORK_ADDED", "work_id": "w", "work_type": "s", "board_type": "b", "num_players": "two"}',
            "$.num_players",
        ),
    ],
)
def test_invalid_input_raises_invalid_event_naming_the_problem(data: bytes, names: str) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(names)):
        decode(data)


# ---- through a real server ------------------------------------------------------------


async def test_every_event_type_round_trips_through_the_log_and_a_durable_consumer(nats_url: str, eventually) -> None:
    async with provisioned_bus(nats_url) as bus:
        published = [await Publisher(bus).publish(e) for e in all_samples()]
        assert [p.seq for p in published] == list(range(1, len(all_samples()) + 1))

        got: list[tuple[Event, Delivery]] = []

        async def collect(event: Event, delivery: Delivery) -> None:
            got.append((event, delivery))

        consumer = EventConsumer(bus, quick_spec("round-trip"), {kind: collect for kind in ALL_KINDS})
        async with running(consumer):
            await eventually(lambda: len(got) >= len(published), message=f"consumer handled {len(got)}")
        assert [e for e, _ in got] == [p.event for p in published]
        assert [(d.stream_seq, d.subject) for _, d in got] == [(p.seq, p.event.subject()) for p in published]
        assert consumer.statistics().handled == len(published)

        records: list[Record] = []
        assert await replay(bus, records.append) == len(published)
        assert [decode(r.data) for r in records] == [p.event for p in published]
        assert [(r.seq, r.subject) for r in records] == [(p.seq, p.event.subject()) for p in published]
        for record, p in zip(records, published):
            assert b"\n" not in record.data
            wire = json.loads(record.data)
            assert wire["type"] == p.event.type_name() == upper_snake(type(p.event).__name__)
            assert set(ENVELOPE) <= set(wire)


async def test_a_plain_core_subscriber_sees_every_event_as_one_json_object(nats_url: str, eventually) -> None:
    plain = await nats.connect(nats_url)
    try:
        seen: list[tuple[str, dict[str, object]]] = []

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            seen.append((msg.subject, json.loads(msg.data)))

        await plain.subscribe("rr.evt.>", cb=on_msg)
        await plain.flush()
        async with provisioned_bus(nats_url) as bus:
            published = await Publisher(bus).publish_many(all_samples())
        await eventually(lambda: len(seen) >= len(published), message=f"plain subscriber saw {len(seen)}")
    finally:
        await plain.close()
    assert [subject for subject, _ in seen] == [p.event.subject() for p in published]
    assert [obj["type"] for _, obj in seen] == [e.type_name() for e in all_samples()]
    assert [obj["id"] for _, obj in seen] == [p.event.id for p in published]
