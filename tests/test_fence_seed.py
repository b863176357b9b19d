"""Which snapshot fences may seed a worker's first start on a trimmed log, and which the retained log refuses (pure)."""

from __future__ import annotations

import datetime as dt

import msgspec

from eventbus.events import Event, LeaderElected, LeaseWritten
from eventbus.leasecopy import copy_subject
from eventbus.leaserecord import LeaseValue, encode_value
from projections.fenceseed import copied_term, refusal, seed_unusable, seed_view
from projections.fencing import EpochFence, FenceView

CANDIDATES = ("c-1", "c-2")


def _acquired(role: str, node: str, epoch: int) -> LeaseWritten:
    return LeaseWritten(role=role, revision=epoch, node=node, incarnation="i", acquiring=True, state="held")


def _folded(events: list[Event], fence: EpochFence | None = None) -> EpochFence:
    fence = fence or EpochFence(CANDIDATES)
    for event in events:
        fence.judge_and_learn(event)
    return fence


HEAD = [_acquired("scheduler", "c-1", 3), LeaderElected(role="scheduler", node="c-1", epoch=3, source="c-1"),
        _acquired("registry", "c-2", 4), LeaderElected(role="registry", node="c-2", epoch=4, source="c-2"),
        _acquired("scheduler", "c-2", 6), LeaderElected(role="scheduler", node="c-2", epoch=6, source="c-2")]
TAIL = [_acquired("registry", "c-1", 9), LeaderElected(role="registry", node="c-1", epoch=9, source="c-1")]


def _seeded_and_retained(head: list[Event] = HEAD, tail: list[Event] = TAIL) -> tuple[FenceView, FenceView]:
    """The seed (the head's fold) folded on over the tail, and the tail's fold alone (the head aged out)."""
    seed = _folded(head).view()
    return _folded(tail, EpochFence.resumed(seed)).view(), _folded(tail).view()


def test_a_seed_folded_on_over_the_retained_log_is_the_whole_logs_fold_and_is_taken() -> None:
    seeded, retained = _seeded_and_retained()
    assert seeded == _folded(HEAD + TAIL).view()
    assert refusal(seeded, retained, {"scheduler": {6}, "registry": {9}}) == ""
    assert refusal(seeded, retained, {}) == ""  # a role whose copies aged out too: nothing contradicts it


def test_a_seed_whose_term_the_logs_lease_copies_contradict_is_refused() -> None:
    seeded, retained = _seeded_and_retained()
    assert "scheduler term at epoch 7" in refusal(seeded, retained, {"scheduler": {6, 7}})


def test_a_seed_that_does_not_know_what_the_retained_log_says_is_refused() -> None:
    seeded, retained = _seeded_and_retained()
    unaware = msgspec.structs.replace(seeded, role_of={e: r for e, r in seeded.role_of.items() if e != 9})
    assert "epoch 9 for the registry role" in refusal(unaware, retained, {})
    behind = msgspec.structs.replace(seeded, newest={**seeded.newest, "registry": 4})
    assert "registry term is at epoch 9" in refusal(behind, retained, {})
    assert "never verified" in refusal(msgspec.structs.replace(seeded, verified=False), retained, {})


def test_only_a_seed_of_this_workers_candidates_that_knows_an_election_is_usable() -> None:
    seed = _folded(HEAD).view()
    assert seed_unusable(seed, CANDIDATES) == ""
    assert "c-1" in seed_unusable(seed, ("c-1",))
    assert "no election" in seed_unusable(_folded(HEAD[:1]).view(), CANDIDATES)
    # The cluster fold may have taken an unnamed epoch before the first election; a worker's priming fold never does.
    assert seed_view(msgspec.structs.replace(seed, newest_unknown=2)) == seed


def test_the_term_a_lease_copy_names_is_a_renewals_or_a_releases_not_an_acquisitions() -> None:
    value = LeaseValue(node="c-2", incarnation="i", epoch=6, ttl_s=3, acquired_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC))
    assert copied_term(copy_subject("scheduler"), encode_value(value)) == ("scheduler", 6)
    assert copied_term(copy_subject("scheduler"), encode_value(msgspec.structs.replace(value, epoch=0))) is None
    assert copied_term(copy_subject("scheduler"), b"") is None  # an expiry or deletion marker
    assert copied_term("rr.evt.leader.scheduler.LEADER_ELECTED.c-2", encode_value(value)) is None
