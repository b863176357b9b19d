"""Elections verified against the lease, pure: the fence believes a LEADER_ELECTED only with its acquisition's copy.

The server copies each lease write into the log (LEASE_WRITTEN); once a fence has seen one, a
candidate announcing a made-up epoch (10**18, another node's acquisition, a renewal's revision)
changes nothing, and a fence that never saw a copy keeps the rules it had before.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from eventbus.errors import InvalidEvent
from eventbus.events import Event, LeaderElected, LeaseWritten, WorkAdded, WorkAssigned
from eventbus.integrity import decode_on
from eventbus.leasecopy import copy_subject, decode_copy
from eventbus.leaserecord import LeaseValue, encode_value
from projections import bundle, cluster
from projections.base import fold_events
from projections.fence import Fence, step
from projections.fencing import ACQUIRED_KEPT, EpochFence, FenceView, Verdict
from projections.snapshot import decode_snapshot, encode_snapshot

pytestmark = pytest.mark.pure

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
FORGED = 10**18


def copy(revision: int, node: str | None = "c1", *, acquiring: bool = True, role: str = "scheduler", state: str = "held") -> LeaseWritten:
    return LeaseWritten(source="nats", role=role, revision=revision, node=node, incarnation="i" if node else None,
                        acquiring=acquiring, state=state)


def elected(node: str, epoch: int, role: str = "scheduler") -> LeaderElected:
    return LeaderElected(source=node, role=role, node=node, epoch=epoch, ts=T0)


def assigned(epoch: int, work_id: str = "w-1", node: str = "c1") -> WorkAssigned:
    return WorkAssigned(source=node, work_id=work_id, node="gpu-1", attempt=1, deadline=T0 + dt.timedelta(hours=1), epoch=epoch, ts=T0)


def verdicts(events: list[Event], candidates: tuple[str, ...] = ("c1", "c2")) -> list[Verdict]:
    fence = EpochFence(candidates)
    return [fence.judge_and_learn(e) for e in events]


def test_without_any_copy_the_fence_keeps_todays_rules_and_believes_a_candidates_made_up_epoch() -> None:
    # A log written before the bucket was sourced: nothing to verify against.
    assert verdicts([elected("c1", 5), elected("c2", FORGED), assigned(5)]) == [
        Verdict.ELECTION, Verdict.ELECTION, Verdict.STALE]


def test_with_copies_a_made_up_epoch_is_not_believed_and_the_real_leader_keeps_deciding() -> None:
    log = [copy(5), elected("c1", 5), elected("c2", FORGED), assigned(FORGED, node="c2"), assigned(5)]
    assert verdicts(log) == [Verdict.NOT_A_DECISION, Verdict.ELECTION, Verdict.UNBELIEVED_ELECTION,
                             Verdict.UNKNOWN_OLD, Verdict.CURRENT]


@pytest.mark.parametrize("forged, why", [
    (elected("c1", 7), "the epoch of another node's acquisition"),
    (elected("c1", 8), "a renewal's revision"),
    (elected("c1", 6), "the real leader's revision + 1, never written"),
    (elected("c1", 9, role="promoter"), "an acquisition of another role's lease"),
])
def test_an_election_is_believed_only_at_an_acquiring_write_of_its_role_naming_its_node(forged: LeaderElected, why: str) -> None:
    log: list[Event] = [copy(5), elected("c1", 5), copy(7, "c2"), copy(8, acquiring=False), copy(9), forged]
    assert verdicts(log)[-1] is Verdict.UNBELIEVED_ELECTION, why


def test_the_refusal_names_the_role_the_revision_and_the_node() -> None:
    fence, _ = step(Fence(view=FenceView(candidates=("c1", "c2"))), copy(5), 1)
    fence, admitted = step(fence, elected("c2", FORGED), 2)
    assert not admitted and fence.last_dropped[-1].verdict == "unbelieved_election"
    assert fence.last_dropped[-1].reason == (
        f"no acquisition of the scheduler lease at revision {FORGED} by c2 in the log: a made-up epoch")


def test_a_made_up_epoch_believed_before_the_first_copy_does_not_block_the_verified_elections_after_it() -> None:
    log = [elected("c2", FORGED), copy(9), elected("c1", 9), assigned(9), assigned(FORGED, node="c2")]
    assert verdicts(log) == [Verdict.ELECTION, Verdict.NOT_A_DECISION, Verdict.ELECTION, Verdict.CURRENT, Verdict.STALE]


def test_an_election_before_its_copy_is_judged_as_before_and_one_after_the_first_copy_needs_its_own() -> None:
    # Upgrade mid-log: the election came before the bucket was sourced, its renewals' copies after.
    log = [elected("c1", 5), copy(6, acquiring=False), assigned(5), elected("c2", 11), copy(12, "c2"), elected("c2", 12)]
    assert verdicts(log) == [Verdict.ELECTION, Verdict.NOT_A_DECISION, Verdict.CURRENT, Verdict.UNBELIEVED_ELECTION,
                             Verdict.NOT_A_DECISION, Verdict.ELECTION]


def test_an_older_term_announced_after_a_newer_one_is_refused_and_epochs_stay_increasing() -> None:
    log = [copy(5), copy(9, "c2"), elected("c2", 9), elected("c1", 5), assigned(5), assigned(9, node="c2")]
    assert verdicts(log) == [Verdict.NOT_A_DECISION, Verdict.NOT_A_DECISION, Verdict.ELECTION,
                             Verdict.UNBELIEVED_ELECTION, Verdict.UNKNOWN_OLD, Verdict.CURRENT]
    # Announced in log order, the older term is believed and then superseded.
    log = [copy(5), elected("c1", 5), copy(9, "c2"), elected("c2", 9), assigned(5)]
    assert verdicts(log)[-2:] == [Verdict.ELECTION, Verdict.STALE]


def test_the_acquisitions_awaiting_an_election_stay_bounded() -> None:
    fence = EpochFence()
    for revision in range(1, 3 * ACQUIRED_KEPT):
        fence.judge_and_learn(copy(revision))
    assert len(fence.view().acquired) == ACQUIRED_KEPT
    fence.judge_and_learn(elected("c1", 3 * ACQUIRED_KEPT - 1))
    assert list(fence.view().acquired) == [3 * ACQUIRED_KEPT - 1]  # older ones will never be announced


def test_a_forged_election_changes_no_projection_and_a_rebuild_keeps_the_verified_fence() -> None:
    log: list[Event] = [copy(5), elected("c1", 5), WorkAdded(source="admin", work_id="w-1", work_type="selfplay",
                        board_type="hex8", num_players=2, ts=T0), elected("c2", FORGED), assigned(5)]
    state = bundle.fold_all_events(list(enumerate(log, 1)), bundle.believing(bundle.ProjectionSet(), ("c1", "c2")))
    assert state.cluster.leaders["scheduler"].node == "c1" and state.cluster.leaders["scheduler"].epoch == 5
    assert state.work.items["w-1"].node == "gpu-1"  # the real leader's assignment is applied
    assert state.cluster.fence.view.verified and state.cluster.fence.dropped == 1

    loaded = decode_snapshot(bundle.PROJECTION, encode_snapshot(bundle.PROJECTION, state))
    assert loaded is not None and loaded.state == state


def test_a_snapshot_written_before_the_change_still_loads_unverified() -> None:
    old = msgspec.json.encode({"newest": {"scheduler": 5}, "role_of": {"5": "scheduler"}, "newest_known": 5})
    view = msgspec.json.decode(old, type=FenceView)
    assert not view.verified and view.acquired == {} and view.newest == {"scheduler": 5}
    state = fold_events(cluster.PROJECTION, [(1, elected("c1", 5))])
    assert not state.fence.view.verified


# ---- decoding the server's copies --------------------------------------------------------


def _source_header(revision: int, subject: str = "$KV.rr_leases.scheduler", stream: str = "KV_rr_leases") -> dict[str, str]:
    return {"Nats-Stream-Source": f"{stream} {revision} $KV.rr_leases.* rr.evt.lease.{{{{wildcard(1)}}}}.LEASE_WRITTEN.nats {subject} x1"}


def _value(epoch: int = 0, node: str = "c1") -> bytes:
    return encode_value(LeaseValue(node=node, incarnation="inc", epoch=epoch, ttl_s=3, acquired_at=T0))


def test_a_copy_is_decoded_from_its_headers_and_the_lease_value() -> None:
    subject = copy_subject("scheduler")
    acquiring = decode_on(subject, _value(), _source_header(41))
    assert isinstance(acquiring, LeaseWritten)
    assert (acquiring.role, acquiring.revision, acquiring.node, acquiring.acquiring, acquiring.state) == ("scheduler", 41, "c1", True, "held")
    renewal = decode_copy(subject, _source_header(42), _value(epoch=41))
    assert not renewal.acquiring and renewal.revision == 42
    marker = decode_copy(subject, {**_source_header(43), "Nats-Marker-Reason": "MaxAge", "Nats-Rollup": "sub"}, b"")
    assert marker.state == "expired" and marker.node is None and not marker.acquiring


@pytest.mark.parametrize("headers, why", [
    (None, "a body published on the copy subject, without the source header"),
    ({"Nats-Stream-Source": "KV_rr_leases x"}, "a malformed header"),
    (_source_header(41, subject="$KV.rr_leases.promoter"), "the write of another role's key"),
    (_source_header(41, stream="RR_EVENTS", subject="$KV.rr_leases.scheduler"), "a stream that is not a lease bucket"),
    (_source_header(41, stream="KV_other", subject="$KV.rr_leases.scheduler"), "a subject of another bucket than the stream's"),
    (_source_header(0), "revision 0"),
])
def test_anything_but_the_servers_copy_on_a_copy_subject_is_invalid(headers: dict[str, str] | None, why: str) -> None:
    with pytest.raises(InvalidEvent):
        decode_on(copy_subject("scheduler"), _value(), headers)
    forged_body = msgspec.json.encode(copy(41))
    with pytest.raises(InvalidEvent):
        decode_on(copy_subject("scheduler"), forged_body, headers)


def test_a_lease_copy_body_on_any_other_subject_disagrees_with_it() -> None:
    with pytest.raises(InvalidEvent):
        decode_on("rr.evt.lease.scheduler.LEASE_WRITTEN.c1", msgspec.json.encode(copy(41)), _source_header(41))
    with pytest.raises(InvalidEvent):
        decode_on("rr.evt.leader.scheduler.LEASE_WRITTEN.nats", msgspec.json.encode(copy(41)), _source_header(41))
