"""Subject and body agree: a body claiming another type, source or aggregate than its subject is never applied."""

from __future__ import annotations

import msgspec
import pytest

from eventbus.consumer import Delivery, EventConsumer
from eventbus.deadletter import list_parked
from eventbus.events import HostOnline, WorkAdded, encode, stamp
from eventbus.history import Record, events
from eventbus.integrity import SubjectMismatch, decode_on, mismatch
from eventbus.publisher import Publisher
from projections import bundle
from projections.base import fold_records
from tests.bus_harness import provisioned_bus, quick_spec, running
from tests.terms import TERM

WORK = stamp(WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2), "gpu-1")
FORGED_HOST = stamp(HostOnline(node="gpu-9", roles=["worker"]), "gpu-1")
# The worker may publish on subjects closed by its own node; here it dresses a HOST_ONLINE as a WORK_ADDED.
FORGED_SUBJECT = "rr.evt.work.w-2.WORK_ADDED.gpu-1"


def test_an_event_on_its_own_subject_agrees() -> None:
    assert mismatch(WORK.subject(), WORK) is None
    assert decode_on(WORK.subject(), encode(WORK)) == WORK


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        ("rr.evt.host.gpu-9.WORK_ADDED.gpu-1", "body type HOST_ONLINE on a WORK_ADDED subject"),
        ("rr.evt.host.gpu-9.HOST_ONLINE.gpu-2", "body source 'gpu-1' on a subject of source 'gpu-2'"),
        ("rr.evt.host.gpu-8.HOST_ONLINE.gpu-1", "body is about host/gpu-9 on a subject about host/gpu-8"),
        ("rr.evt.work.gpu-9.HOST_ONLINE.gpu-1", "body is about host/gpu-9 on a subject about work/gpu-9"),
        ("rr.evt.host.gpu-9.HOST_ONLINE", "is not an event subject"),
    ],
)
def test_each_disagreement_is_named(subject: str, why: str) -> None:
    problem = mismatch(subject, FORGED_HOST)
    assert problem is not None and why in problem
    with pytest.raises(SubjectMismatch, match="subject and body disagree"):
        decode_on(subject, encode(FORGED_HOST))


def test_a_host_online_body_on_a_work_added_subject_changes_no_view() -> None:
    honest = [Record(1, WORK.subject(), encode(WORK))]
    before = fold_records(bundle.PROJECTION, honest)
    after = fold_records(bundle.PROJECTION, [*honest, Record(2, FORGED_SUBJECT, encode(FORGED_HOST))])
    assert after.cluster.nodes == before.cluster.nodes and "gpu-9" not in after.cluster.nodes
    assert after.work.items == before.work.items
    assert after.last_seq == 2
    anomalies = list(after.anomalies)  # recorded once, for the whole set, as an unreadable message is
    assert [(a.seq, a.type) for a in anomalies] == [(2, "HOST_ONLINE")]
    assert "body type HOST_ONLINE on a WORK_ADDED subject" in anomalies[0].reason
    # The same body on its own subject would have been applied: the subject is what refused it.
    term = stamp(TERM, "lead")  # a leader's HOST_ONLINE carries its term's epoch
    host = msgspec.structs.replace(FORGED_HOST, epoch=TERM.epoch)
    applied = fold_records(bundle.PROJECTION, [*honest, Record(2, term.subject(), encode(term)),
                                               Record(3, host.subject(), encode(host))])
    assert "gpu-9" in applied.cluster.nodes


async def test_a_consumer_parks_a_disagreeing_event_with_the_reason_and_handles_the_rest(nats_url: str, eventually) -> None:
    async with provisioned_bus(nats_url) as bus:
        forged = await bus.js.publish(FORGED_SUBJECT, encode(FORGED_HOST))
        good = await Publisher(bus).publish(WorkAdded(work_id="w-3", work_type="selfplay", board_type="hex8", num_players=2))
        seen: list[tuple[str, int]] = []

        async def on_any(event: WorkAdded | HostOnline, delivery: Delivery) -> None:
            seen.append((event.type_name(), delivery.stream_seq))

        consumer = EventConsumer(bus, quick_spec("integrity"), {WorkAdded: on_any, HostOnline: on_any})
        async with running(consumer):
            await eventually(lambda: consumer.statistics().parked == 1 and len(seen) == 1, message=f"{consumer.statistics()}")
        assert seen == [("WORK_ADDED", good.seq)]
        [parked] = await list_parked(bus)
        assert parked.stream_seq == forged.seq and parked.subject == FORGED_SUBJECT
        assert parked.reason.startswith("subject and body disagree: body type HOST_ONLINE on a WORK_ADDED subject")
        assert parked.data == encode(FORGED_HOST)
        # History readers get the same verdict as a value.
        read = [item async for item in events(bus)]
        assert isinstance(read[0][1], SubjectMismatch) and read[1][1].type_name() == "WORK_ADDED"
