"""A worker's fence saved at a position and resumed there judges every later event as the fold from the start does.

Also why the fence is not primed from each subject's newest record instead: the verdicts
that depend on older elections, pinned here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus.events import Event, LeaderElected, LeaderLost, LeaseWritten, WorkAssigned, WorkCancelled
from eventbus.history import Record
from projections.fencing import EpochFence, FenceView, Verdict
from services.worker.savedfence import Anchor, SavedFence, anchor_of, load, resumable, save

pytestmark = pytest.mark.pure

CANDIDATES = ("c-1", "c-2")
ROLES = ("scheduler", "registry")
NODES = ("c-1", "c-2", "intruder")
DEADLINE = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


def _elected(role: str, node: str, epoch: int) -> LeaderElected:
    return LeaderElected(role=role, node=node, ttl_s=3.0, epoch=epoch, source=node)


def _copy(role: str, revision: int, node: str, acquiring: bool = True) -> LeaseWritten:
    return LeaseWritten(source="nats", role=role, revision=revision, node=node, incarnation="i", acquiring=acquiring)


def _assigned(epoch: int | None) -> WorkAssigned:
    return WorkAssigned(work_id="w-1", node="gpu-1", attempt=1, deadline=DEADLINE, epoch=epoch)


_epochs = st.integers(min_value=1, max_value=40)
_roles, _nodes = st.sampled_from(ROLES), st.sampled_from(NODES)
_events = st.one_of(
    st.builds(_elected, _roles, _nodes, _epochs),
    st.builds(lambda r, n, e: LeaderLost(role=r, node=n, epoch=e, reason="", source=n), _roles, _nodes, _epochs),
    st.builds(_copy, _roles, _epochs, _nodes, st.booleans()),
    st.builds(_assigned, st.one_of(st.none(), _epochs)),
    st.builds(lambda e: WorkCancelled(work_id="w-1", reason="", epoch=e), st.one_of(st.none(), _epochs)),
)


def _saved_and_resumed(fence: EpochFence) -> EpochFence:
    """The fence as the next start gets it: written to disk as JSON, read back."""
    record = Record(1, "rr.evt.leader.scheduler.LEADER_ELECTED.c-1", b"{}", None)
    saved = SavedFence(view=fence.view(), position=1, first_seq=1, anchor=anchor_of(record))
    return EpochFence.resumed(msgspec.json.decode(msgspec.json.encode(saved), type=SavedFence).view)


@settings(max_examples=300, deadline=None)
@given(st.lists(_events, max_size=40), st.lists(_events, max_size=30))
def test_a_fence_resumed_from_its_saved_view_judges_every_later_event_as_the_fold_from_the_start(
        before: list[Event], after: list[Event]) -> None:
    folded = EpochFence(CANDIDATES)
    for event in before:
        folded.judge_and_learn(event)
    resumed = _saved_and_resumed(folded)
    assert [resumed.judge_and_learn(e) for e in after] == [folded.judge_and_learn(e) for e in after]
    assert resumed.view() == folded.view()


def _record(seq: int, data: bytes = b"{}") -> Record:
    return Record(seq, "rr.evt.leader.scheduler.LEADER_ELECTED.c-1", data, None)


def _saved(position: int = 10, first_seq: int = 1) -> SavedFence:
    return SavedFence(view=FenceView(candidates=CANDIDATES), position=position, first_seq=first_seq,
                      anchor=anchor_of(_record(7)))


def test_a_saved_fence_is_resumed_only_on_the_log_it_was_folded_from_with_the_same_candidates() -> None:
    assert resumable(_saved(), CANDIDATES, 10, _record(7))
    assert resumable(_saved(), CANDIDATES, 500, _record(7))
    assert not resumable(_saved(), ("c-1",), 10, _record(7))  # other candidates: other elections believed
    assert not resumable(_saved(), CANDIDATES, 9, _record(7))  # a log shorter than the fence's position
    assert not resumable(_saved(), CANDIDATES, 10, _record(7, b'{"id":"other"}'))  # the log made again
    assert not resumable(_saved(), CANDIDATES, 10, None)  # its anchor aged out or deleted
    assert anchor_of(_record(7)) == Anchor(seq=7, subject=_record(7).subject, digest=anchor_of(_record(7)).digest)


async def test_a_saved_fence_is_read_back_and_a_missing_unreadable_or_unwritable_file_costs_only_the_full_read(
        tmp_path: Path) -> None:
    fence = _folded([_elected("scheduler", "c-1", 3), _copy("registry", 4, "c-2")])
    saved = msgspec.structs.replace(_saved(), view=fence.view())
    await save(tmp_path / "worker" / "fence.json", saved)
    assert await load(tmp_path / "worker" / "fence.json") == saved
    assert not list((tmp_path / "worker").glob("*.partial"))
    assert await load(tmp_path / "nothing.json") is None
    (tmp_path / "torn.json").write_bytes(msgspec.json.encode(saved)[:-5])
    assert await load(tmp_path / "torn.json") is None
    (tmp_path / "a-file").write_bytes(b"")
    await save(tmp_path / "a-file" / "fence.json", saved)  # its folder cannot be made: logged, not raised


def _newest_per_subject(log: list[Event]) -> list[Event]:
    """What a read of each subject's newest record gives: one election per (role, node), in log order."""
    newest: dict[tuple[str, str, str], int] = {}
    for i, event in enumerate(log):
        newest[(type(event).__name__, getattr(event, "role", ""), getattr(event, "node", "") or "")] = i
    return [log[i] for i in sorted(newest.values())]


def _folded(log: list[Event]) -> EpochFence:
    fence = EpochFence(CANDIDATES)
    for event in log:
        fence.judge_and_learn(event)
    return fence


def test_a_fence_primed_from_each_subjects_newest_record_judges_an_old_terms_decision_otherwise() -> None:
    # c-1 led twice: its first election is no subject's newest record any more.
    log: list[Event] = [_elected("scheduler", "c-1", 3), _elected("scheduler", "c-2", 5), _elected("scheduler", "c-1", 8)]
    full, newest = _folded(log), _folded(_newest_per_subject(log))
    assert full.judge_and_learn(_assigned(3)) is Verdict.STALE  # a deposed term's assignment
    assert newest.judge_and_learn(_assigned(3)) is Verdict.UNKNOWN_OLD  # dropped too, counted as made up


def test_a_fence_primed_from_each_subjects_newest_record_believes_an_election_reusing_an_old_epoch() -> None:
    # A log without lease copies: an election reusing another role's old epoch is believed by the newest records' fence.
    log: list[Event] = [_elected("registry", "c-1", 3), _elected("registry", "c-1", 9)]
    full, newest = _folded(log), _folded(_newest_per_subject(log))
    assert full.judge_and_learn(_elected("scheduler", "c-2", 3)) is Verdict.UNBELIEVED_ELECTION
    assert newest.judge_and_learn(_elected("scheduler", "c-2", 3)) is Verdict.ELECTION
    assert full.admit(_assigned(3)) is False and newest.admit(_assigned(3)) is True
