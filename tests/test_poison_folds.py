"""No single event stops a fold or a decision: bounded decoding, total folds, guarded decisions (pure, no server)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from cluster.distribution import failures as distributor_folds
from config.sections.scheduler import SchedulerSettings
from eventbus.errors import BusUnavailable, InvalidEvent, StorageFull
from eventbus.events import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    EvaluationComplete,
    Event,
    HostOnline,
    ModelPromoted,
    SelfplayComplete,
    WorkAdded,
    checked,
    decode,
    encode,
)
from eventbus.publisher import Publisher, _ApiError, _PubAckReply
from projections import bundle, cluster, data, elo, models, taint, work
from projections.base import Projection, fold_events, fold_records
from services.leader import pipeline_view, queue, signals
from services.leader.decisions import assignment_round, supervision_round
from services.leader.leaderfold import Decisions
from tests.event_fuzz import hostile_payloads, largest
from tests.event_samples import sample_event
from tests.terms import TERM

NOW = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)

# Every fold of the code base: module-level `apply` functions and the projections built on them.
FOLDS: dict[str, tuple[Any, Any]] = {
    "cluster": (cluster.apply, cluster.ClusterState),
    "work": (work.apply, work.WorkState),
    "models": (models.apply, models.ModelsState),
    "data": (data.apply, data.DataState),
    "elo": (elo.apply, elo.EloState),
    "taint": (taint.apply, taint.TaintState),
    "bundle": (bundle.apply, bundle.ProjectionSet),
    "queue": (queue.apply, queue.QueueState),
    "pipeline": (pipeline_view.apply, pipeline_view.PipelineView),
    "failures": (distributor_folds.apply_failure, distributor_folds.FailuresState),
}


class Record(msgspec.Struct, frozen=True):
    seq: int
    subject: str
    data: bytes


def rec(seq: int, event: Event) -> Record:
    return Record(seq, event.subject(), encode(event))


# ---- total folds --------------------------------------------------------------------------


def test_an_error_applying_one_event_is_an_anomaly_naming_its_seq_and_cause_and_folding_goes_on() -> None:
    def fragile(state: work.WorkState, event: Event, seq: int) -> work.WorkState:
        if isinstance(event, WorkAdded) and event.work_id == "bad":
            raise ZeroDivisionError("division by zero")
        return work.apply(state, event, seq)

    projection = Projection(name="fragile", version=1, initial=work.WorkState, apply=fragile, reads=work.PROJECTION.reads)
    added = [WorkAdded(work_id=w, work_type="selfplay", board_type="hex8", num_players=2) for w in ("a", "bad", "c")]
    state = fold_records(projection, [rec(i + 1, e) for i, e in enumerate(added)])
    assert sorted(state.items) == ["a", "c"]
    assert state.last_seq == 3
    [anomaly] = [a for a in state.anomalies if a.about == "bad"]
    assert anomaly.seq == 2 and anomaly.type == "WORK_ADDED"
    assert anomaly.reason == "fold error: ZeroDivisionError: division by zero"


@pytest.mark.parametrize("name", sorted(FOLDS))
def test_every_fold_is_wrapped_to_be_total(name: str) -> None:
    apply, _ = FOLDS[name]
    assert hasattr(apply, "__wrapped_fold__"), f"{name}: decorate its apply with projections.base.total"


def _gutted(kind: type[Event]) -> Event:
    """An event of `kind` whose fields all hold None: what no decoder lets through, and a fold must still survive."""
    sample = sample_event(kind, 1)
    return msgspec.structs.replace(sample, **{f: None for f in sample.__struct_fields__ if f not in ("id", "source", "v")})


@pytest.mark.parametrize("kind", list(EVENT_TYPES.values()), ids=list(EVENT_TYPES))
def test_no_fold_raises_on_an_event_with_every_field_gone(kind: type[Event]) -> None:
    event = _gutted(kind)
    for name, (apply, initial) in FOLDS.items():
        state = apply(initial(), event, 7)
        assert state.last_seq == 7, name
        follow_up = HostOnline(node="n1")
        assert apply(state, follow_up, 8).last_seq == 8, f"{name} stopped folding after {kind.type_name()}"


def test_a_promotion_without_a_time_after_an_evaluation_leaves_priorities_computable() -> None:
    # The reproduction: EVALUATION_COMPLETE with an Elo, then MODEL_PROMOTED without `ts`.
    events = [
        (1, TERM),
        (2, EvaluationComplete(model_id="m1", work_id="e1", node="n", opponent="random", games=4, wins=4, losses=0, elo=1500.0, ts=NOW)),
        (3, ModelPromoted(model_id="m1", board_type="hex8", num_players=2, sha256="s", ts=None, epoch=TERM.epoch)),
        (4, SelfplayComplete(batch_id="b", work_id="w", node="n", board_type="hex8", num_players=2, num_games=1, ts=None)),
    ]
    state = fold_events(queue.PROJECTION, events)
    assert signals.config_signals(state.facts, NOW, 24.0) == {}
    assert state.anomaly_count == 0
    settings_ = SchedulerSettings()
    assert supervision_round(state, NOW, settings_) == []
    assert assignment_round(state, NOW, None, settings_) == []


def test_a_failing_decision_decides_nothing_is_logged_once_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    decisions = Decisions("test-loop")

    def broken(state: int) -> list[int]:
        raise TypeError("unsupported operand type(s) for -: 'datetime.datetime' and 'NoneType'")

    with caplog.at_level(logging.ERROR):
        assert decisions(broken, 1) == []
        assert decisions(broken, 1) == []
    assert decisions.failures == 2
    assert len([r for r in caplog.records if "deciding failed" in r.getMessage()]) == 1
    assert decisions(lambda s: [s + 1], 1) == [2]


# ---- strict decoding -----------------------------------------------------------------------


def _host(**fields: Any) -> bytes:
    return json.dumps({"type": "HOST_ONLINE", "node": "n1", **fields}).encode()


def _added(**fields: Any) -> bytes:
    body = {"type": "WORK_ADDED", "work_id": "w", "work_type": "selfplay", "board_type": "hex8", "num_players": 2}
    return json.dumps({**body, **fields}).encode()


REPRODUCTIONS = {
    "json nested 5000 deep": b'{"type": "WORK_ADDED", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "a nested field 20000 deep": _added(params=1)[:-1] + b', "p": ' + b'{"a":' * 20000 + b"1" + b"}" * 20000 + b"}",
    "a body over MAX_EVENT_BYTES": _host(version="v" * MAX_EVENT_BYTES),
    "cpu_count 1e30": _host(resources={"cpu_count": 10**30}),
    "num_players 1e30": _added(num_players=10**30),
    "priority 1e40": _added(priority=10**40),
    "a 1000-character gpu name": _host(resources={"gpus": [{"name": "G" * 1000, "memory_gb": 1}]}),
    "a node id of 300 characters": _host(node="n" * 300),
    "an epoch of 10^18": json.dumps({"type": "LEADER_ELECTED", "role": "scheduler", "node": "x", "epoch": 10**18}).encode(),
    "a time without a zone": _host(ts="2025-01-01T00:00:00"),
    "Infinity": _host(resources={"memory_gb": "Infinity"}).replace(b'"Infinity"', b"Infinity"),
    "1e400": _host(resources={"memory_gb": 1}).replace(b'"memory_gb": 1', b'"memory_gb": 1e400'),
    "a negative size": json.dumps({"type": "MODEL_PROMOTED", "model_id": "m", "board_type": "b", "num_players": 2,
                                   "sha256": "s", "size_bytes": -1}).encode(),
    "non-UTF-8 bytes": b'{"type": "HOST_ONLINE", "node": "\xff\xfe"}',
    "a missing required field": b'{"type": "WORK_ASSIGNED", "work_id": "w"}',
    "an unknown type": b'{"type": "NOPE"}',
    "not JSON": b"\x00\x01garbage",
}


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_every_bad_body_is_an_invalid_event_and_nothing_else(name: str) -> None:
    with pytest.raises(InvalidEvent):
        decode(REPRODUCTIONS[name])


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_every_projection_decoder_parks_bad_bodies_as_anomalies(name: str) -> None:
    record = Record(1, "rr.evt.host.n1.HOST_ONLINE.n1", REPRODUCTIONS[name])
    state = bundle.fold_all([record])
    assert state.last_seq == 1
    assert bundle.total_anomalies(state) == 1 and "undecodable" in state.anomalies[0].reason


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile_payloads())
def test_a_hostile_payload_decodes_or_is_invalid_and_no_fold_raises(payload: tuple[str, bytes]) -> None:
    subject, body = payload
    try:
        event = decode(body)
    except InvalidEvent:
        return
    for name, (apply, initial) in FOLDS.items():
        assert apply(initial(), event, 1).last_seq == 1, name


def test_the_largest_event_the_catalogue_allows_fits_max_event_bytes() -> None:
    sizes = {kind.type_name(): len(encode(largest(kind))) for kind in EVENT_TYPES.values()}
    too_big = {name: size for name, size in sizes.items() if size > MAX_EVENT_BYTES}
    assert not too_big, f"lower these types' list or string bounds, or raise MAX_EVENT_BYTES: {too_big}"
    for kind in EVENT_TYPES.values():
        assert decode(encode(largest(kind))) == largest(kind), kind.type_name()


def test_publishing_an_event_out_of_bounds_is_refused_naming_the_field() -> None:
    event = HostOnline(node="n1", reason="r" * 5000)
    with pytest.raises(InvalidEvent, match=r"HOST_ONLINE 'n1' breaks the event schema: .*\$\.reason"):
        checked(event)
    assert decode(checked(HostOnline(node="n1"))) == HostOnline(node="n1")


def test_a_full_store_is_a_retryable_storage_error_saying_what_to_free() -> None:
    event = HostOnline(node="n1")
    full = _PubAckReply(error=_ApiError(code=503, err_code=10047, description="insufficient storage resources available"))
    with pytest.raises(StorageFull, match=r"HOST_ONLINE not stored: JetStream storage is full .*err_code 10047.*free space") as raised:
        Publisher._published(event, full, None)
    assert isinstance(raised.value, BusUnavailable) and raised.value.retryable
    disk = _PubAckReply(error=_ApiError(code=500, err_code=10077, description="write error: no space left on device"))
    with pytest.raises(StorageFull):
        Publisher._published(event, disk, None)
