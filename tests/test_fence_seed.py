"""Which snapshot fences may seed a worker's first start on a trimmed log, and which the retained log refuses (pure)."""

from __future__ import annotations

import datetime as dt

import msgspec

from eventbus.events import Event, LeaderElected, LeaseWritten
from eventbus.history import Record
from eventbus.leasecopy import SOURCE_HEADER, copy_subject
from eventbus.leaserecord import LeaseValue, encode_value
from projections.fenceseed import copied_term, refusal, seed_unusable, seed_view
from projections.fencing import EpochFence, FenceView
from services.worker.fencefeed import SeededFold
from services.worker.snapshotseed import Seed

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
    assert refusal(seeded, retained, {"scheduler": 6}) == ""
    assert refusal(seeded, retained, {}) == ""  # a role whose copies aged out too: nothing contradicts it
    # A new term's acquisition, its election not in the log yet: the seed awaits it.
    awaiting, pending = _seeded_and_retained(tail=[*TAIL, _acquired("scheduler", "c-1", 11)])
    assert refusal(awaiting, pending, {"scheduler": 11}) == ""


def test_a_seed_whose_term_the_logs_newest_lease_copy_contradicts_is_refused() -> None:
    seeded, retained = _seeded_and_retained()
    assert "scheduler lease in the log names the term at epoch 7" in refusal(seeded, retained, {"scheduler": 7})
    # A made-up newer term: the real one's acquisition, still among those the fence keeps, is no newer acquisition.
    forged = msgspec.structs.replace(seeded, newest={**seeded.newest, "scheduler": 12})
    assert "scheduler lease in the log names the term at epoch 6" in refusal(forged, retained, {"scheduler": 6})


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


def test_the_term_a_lease_copy_names_is_a_renewals_value_or_an_acquisitions_revision() -> None:
    value = LeaseValue(node="c-2", incarnation="i", epoch=6, ttl_s=3, acquired_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC))
    subject, source = copy_subject("scheduler"), {SOURCE_HEADER: "KV_rr_leases 8 $KV.rr_leases.* x $KV.rr_leases.scheduler"}
    assert copied_term(subject, encode_value(value), source) == ("scheduler", 6)
    assert copied_term(subject, encode_value(msgspec.structs.replace(value, epoch=0)), source) == ("scheduler", 8)
    assert copied_term(subject, encode_value(msgspec.structs.replace(value, epoch=0)), None) is None
    assert copied_term(subject, b"", {"KV-Operation": "DEL"}) is None  # a release, an expiry marker
    assert copied_term("rr.evt.leader.scheduler.LEADER_ELECTED.c-2", encode_value(value), None) is None


def test_a_seed_never_verified_that_meets_a_lease_copy_the_read_passes_over_is_dropped() -> None:
    # The read passes over renewal copies that change no verified fence; a seed not verified would have learnt from one.
    seed = Seed(view=_folded(HEAD[1:2], EpochFence(CANDIDATES)).view(), position=10)
    assert not seed.view.verified and seed.view.newest == {"scheduler": 3}
    fold = SeededFold(CANDIDATES, 5, seed)
    fold.passed(Record(12, copy_subject("scheduler"), b"{}", None))
    fenced, seeded = fold.chosen({})
    assert not seeded and fenced is fold.retained
