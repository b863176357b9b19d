"""Subject layout rr.evt.<aggregate>.<id>.<TYPE>.<source>, and the wildcard filters built on it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from eventbus.events import Event, HostOffline, HostOnline, WorkAdded, WorkFailed, WorkStarted
from eventbus.history import Record, replay
from eventbus.publisher import Published, Publisher
from eventbus.subjects import (
    ALL_EVENTS,
    aggregate_filter,
    deadletter_subject,
    event_subject,
    few_subjects,
    heartbeat_subject,
    source_filter,
    token,
    type_filter,
)
from tests.bus_harness import provisioned_bus
from tests.event_samples import sample_event


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("gpu-7", "gpu-7"),
        ("node_1:a", "node_1:a"),
        ("lambda.gh200.a", "lambda_gh200_a"),
        ("two words", "two_words"),
        ("a*b>c", "a_b_c"),
        ("tab\there", "tab_here"),
        ("", "_"),
    ],
)
def test_token_makes_any_id_one_subject_token(raw: str, safe: str) -> None:
    assert token(raw) == safe


def test_event_subject_layout() -> None:
    assert event_subject("work", "w-1", "WORK_ADDED", "gpu-7") == "rr.evt.work.w-1.WORK_ADDED.gpu-7"
    assert event_subject("model", "sq8.v2", "MODEL_PROMOTED", "a.b") == "rr.evt.model.sq8_v2.MODEL_PROMOTED.a_b"


def test_an_event_subject_has_six_tokens_whatever_its_ids_hold() -> None:
    event = sample_event(WorkAdded, work_id="w.1 *>", source="host.example.com")
    assert event.subject() == "rr.evt.work.w_1___.WORK_ADDED.host_example_com"
    assert len(event.subject().split(".")) == 6


def test_filters_and_other_subjects() -> None:
    assert ALL_EVENTS == "rr.evt.>"
    assert aggregate_filter("host", "gpu.7") == "rr.evt.host.gpu_7.>"
    assert type_filter("WORK_FAILED") == "rr.evt.*.*.WORK_FAILED.*"
    assert source_filter("gpu-7") == "rr.evt.*.*.*.gpu-7"
    assert heartbeat_subject("gpu.7") == "rr.tel.hb.gpu_7"
    assert deadletter_subject("RR_EVENTS", "proj.cluster") == "rr.dlq.RR_EVENTS.proj_cluster"


def _mixed_events(node: str) -> list[Event]:
    """Membership of two hosts and the lives of two work items, as one node reports them."""
    return [
        sample_event(HostOnline, node="gpu-7"),
        sample_event(HostOnline, node="gpu-8"),
        sample_event(WorkAdded, work_id="w-1"),
        sample_event(WorkAdded, work_id="w-2"),
        sample_event(WorkStarted, work_id="w-1", node=node),
        sample_event(WorkFailed, work_id="w-1"),
        sample_event(WorkStarted, work_id="w-2", node=node),
        sample_event(WorkFailed, work_id="w-2"),
        sample_event(HostOffline, node="gpu-7"),
    ]


async def _published_by_two_nodes(url: str) -> list[Published]:
    published: list[Published] = []
    for node in ("gpu-7", "gpu-8"):
        async with provisioned_bus(url, node_id=node) as bus:
            published += await Publisher(bus).publish_many(_mixed_events(node))
    return published


FILTERS: list[tuple[str, str, Callable[[Event], bool]]] = [
    ("one host", aggregate_filter("host", "gpu-7"), lambda e: e.aggregate == "host" and e.aggregate_id() == "gpu-7"),
    ("one work item", aggregate_filter("work", "w-1"), lambda e: e.aggregate == "work" and e.aggregate_id() == "w-1"),
    ("one type", type_filter("WORK_FAILED"), lambda e: isinstance(e, WorkFailed)),
    ("one source", source_filter("gpu-8"), lambda e: e.source == "gpu-8"),
    ("all", ALL_EVENTS, lambda e: True),
]


async def test_events_land_on_their_subject_and_each_filter_selects_exactly_its_events(nats_url: str) -> None:
    published = await _published_by_two_nodes(nats_url)
    async with provisioned_bus(nats_url, node_id="reader") as bus:
        records: list[Record] = []
        await replay(bus, records.append)
        assert [r.subject for r in records] == [p.event.subject() for p in published]
        for record, p in zip(records, published):
            e = p.event
            assert record.subject == f"rr.evt.{e.aggregate}.{e.aggregate_id()}.{e.type_name()}.{e.source}"

        for name, subject_filter, wanted in FILTERS:
            selected: list[Record] = []
            await replay(bus, selected.append, subject=subject_filter)
            expected = [p.seq for p in published if wanted(p.event)]
            assert expected, f"the sample data has no events for {name}"
            assert [r.seq for r in selected] == expected, f"filter for {name} ({subject_filter})"


@pytest.mark.parametrize(
    ("subject_filter", "few"),
    [
        ("rr.evt.leader.>", True),  # roles, nodes, quarantines, models: few ids
        ("rr.evt.lease.>", True),
        ("rr.evt.host.gpu-7.>", True),
        ("rr.evt.model.>", True),
        ("rr.evt.quarantine.*.OUTPUTS_QUARANTINED.*", True),
        ("rr.evt.work.w-1.>", True),  # one work item
        ("rr.evt.data.b-1.SELFPLAY_COMPLETE.*", True),
        ("rr.evt.work.>", False),  # one id per work item: millions at a year's log
        ("rr.evt.data.*.SELFPLAY_COMPLETE.*", False),
        ("rr.evt.*.*.WORK_ADDED.*", False),  # a type under wildcards walks every aggregate's ids
        ("rr.evt.*.*.*.gpu-7", False),
        ("rr.evt.>", False),
        ("$KV.rr_leases.>", True),  # not the log: not judged
    ],
)
def test_a_filter_matches_few_subjects_only_within_an_aggregate_of_few_ids_or_one_id(subject_filter: str, few: bool) -> None:
    assert few_subjects(subject_filter) is few


async def test_one_read_of_several_filters_is_refused_when_one_matches_many_subjects(nats_url: str) -> None:
    # Such a consumer takes the server seconds to create on a long log, wherever it starts.
    published = await _published_by_two_nodes(nats_url)
    async with provisioned_bus(nats_url, node_id="reader") as bus:
        with pytest.raises(ValueError, match="many subjects"):
            await replay(bus, lambda _r: None, subjects=(aggregate_filter("host", "gpu-7"), type_filter("WORK_FAILED")))
        together: list[Record] = []
        await replay(bus, together.append, subjects=("rr.evt.host.>", aggregate_filter("work", "w-1")))
        assert [r.seq for r in together] == [p.seq for p in published if p.event.aggregate == "host" or
                                             (p.event.aggregate == "work" and p.event.aggregate_id() == "w-1")]
