"""The pure cores of leadership: lease bookkeeping, the epoch fence, candidacy and settings, with plain values."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.leadership import lease
from cluster.leadership.candidacy import candidacy
from config.settings import RrConfig, load_config
from eventbus.errors import InvalidConfig
from eventbus.events import (
    ConfigChanged,
    HostOnline,
    LeaderElected,
    LeaderLost,
    ModelPromoted,
    WorkAssigned,
    WorkAttemptFailed,
    WorkStarted,
)
from eventbus.leases import LeaseRecord, LeaseValue, parse_headers, record_from
from projections.fencing import EpochFence, Verdict

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TIMING = lease.timing_for(3.0)  # renew every 1 s, stop acting 0.6 s before expiry


def held(revision: int, node: str = "b", incarnation: str = "other", epoch: int = 0) -> LeaseRecord:
    value = LeaseValue(node=node, incarnation=incarnation, epoch=epoch, ttl_s=3, acquired_at=T0)
    return LeaseRecord(role="scheduler", revision=revision, state="held", holder=value)


def free(revision: int, state: str = "expired") -> LeaseRecord:
    return LeaseRecord(role="scheduler", revision=revision, state=state)  # type: ignore[arg-type]


def follower() -> lease.ElectorState:
    return lease.initial_state("scheduler", "a", "me", TIMING, candidate=True)


def leader(won_at: float = 100.0, revision: int = 7) -> lease.ElectorState:
    state = lease.apply(follower(), lease.LeaseSeen(free(6)))
    return lease.apply(state, lease.Won(revision=revision, sent_at=won_at, previous_node="b"))


# ---- lease bookkeeping ------------------------------------------------------------------


def test_a_leader_may_act_until_ttl_minus_margin_after_the_renewal_was_sent() -> None:
    term = leader(won_at=100.0).term
    assert term is not None
    assert lease.may_act(term, 100.0)
    assert lease.may_act(term, 102.39)
    assert not lease.may_act(term, 102.4)  # 100 + 3 - 0.6
    assert lease.act_deadline(100.0, 3.0, 0.6) == pytest.approx(102.4)


def test_a_follower_campaigns_over_a_free_key_expecting_its_revision() -> None:
    state = lease.apply(follower(), lease.LeaseSeen(held(5)))
    assert isinstance(lease.next_action(state, 0.0), lease.Wait)
    state = lease.apply(state, lease.LeaseSeen(free(6)))
    assert lease.next_action(state, 0.0) == lease.Campaign(expect_revision=6, previous_node="b")


def test_an_absent_key_is_campaigned_for_with_revision_zero_even_after_a_marker() -> None:
    state = lease.apply(follower(), lease.LeaseSeen(free(6)))
    # The expiry marker itself expired: a read now finds nothing, which is newer news.
    state = lease.apply(state, lease.LeaseSeen(free(0, "absent")))
    assert lease.next_action(state, 0.0) == lease.Campaign(expect_revision=0, previous_node=None)


def test_an_older_record_from_a_slow_read_does_not_replace_a_newer_one() -> None:
    state = lease.apply(follower(), lease.LeaseSeen(held(9)))
    state = lease.apply(state, lease.LeaseSeen(free(6)))
    assert state.record is not None and state.record.revision == 9


def test_a_non_candidate_never_campaigns() -> None:
    state = lease.initial_state("scheduler", "a", "me", TIMING, candidate=False)
    state = lease.apply(state, lease.LeaseSeen(free(3)))
    assert isinstance(lease.next_action(state, 0.0), lease.Wait)
    with pytest.raises(lease.IllegalTransition):
        lease.apply(state, lease.Won(revision=4, sent_at=0.0))


def test_a_process_reclaims_a_lease_it_wrote_but_lost_track_of_but_not_one_of_a_previous_life() -> None:
    mine = lease.apply(follower(), lease.LeaseSeen(held(4, node="a", incarnation="me")))
    assert lease.next_action(mine, 0.0) == lease.Campaign(expect_revision=4, previous_node="a")
    restarted = lease.apply(follower(), lease.LeaseSeen(held(4, node="a", incarnation="old")))
    assert isinstance(lease.next_action(restarted, 0.0), lease.Wait)


def test_a_failed_campaign_waits_a_little_before_the_next() -> None:
    state = lease.apply(follower(), lease.LeaseSeen(free(6)))
    state = lease.apply(state, lease.CampaignFailed(at=10.0))
    assert lease.next_action(state, 10.1) == lease.Wait(until=10.0 + TIMING.retry_s)
    assert isinstance(lease.next_action(state, 10.0 + TIMING.retry_s), lease.Campaign)


def test_winning_makes_the_acquiring_revision_the_epoch() -> None:
    state = leader(won_at=100.0, revision=7)
    assert state.phase is lease.Phase.LEADING
    assert state.term is not None
    assert (state.term.epoch, state.term.revision, state.term.previous_node) == (7, 7, "b")


def test_a_leader_renews_every_third_of_the_ttl_expecting_its_latest_revision() -> None:
    state = leader(won_at=100.0)
    assert lease.next_action(state, 100.5) == lease.Wait(until=101.0)
    action = lease.next_action(state, 101.0)
    assert isinstance(action, lease.Renew) and action.revision == 7 and action.deadline == pytest.approx(102.4)
    state = lease.apply(state, lease.Renewed(revision=9, sent_at=101.0))
    assert state.term is not None and (state.term.epoch, state.term.revision) == (7, 9)
    assert lease.next_action(state, 101.5) == lease.Wait(until=102.0)


def test_a_leader_whose_renewals_get_no_answer_steps_down_at_its_deadline() -> None:
    state = leader(won_at=100.0)
    state = lease.apply(state, lease.RenewFailed(at=101.0))
    assert lease.next_action(state, 101.05) == lease.Wait(until=101.0 + TIMING.retry_s)
    assert isinstance(lease.next_action(state, 101.0 + TIMING.retry_s), lease.Renew)
    assert lease.next_action(state, 102.4) == lease.StepDown(reason="lease not renewed before its deadline")


def test_a_paused_leader_steps_down_on_resume_instead_of_renewing() -> None:
    state = leader(won_at=100.0)
    # Resumed 30 s later: renewal is long due, but the deadline has passed first.
    assert isinstance(lease.next_action(state, 130.0), lease.StepDown)


def test_seeing_another_holder_or_an_expiry_while_leading_ends_the_term() -> None:
    state = leader(revision=7)
    taken = lease.apply(state, lease.LeaseSeen(held(12, node="c")))
    assert lease.next_action(taken, 100.1) == lease.StepDown(reason="superseded by c")
    expired = lease.apply(state, lease.LeaseSeen(free(8)))
    assert lease.next_action(expired, 100.1) == lease.StepDown(reason="lease expired")


def test_while_leading_our_own_writes_and_older_records_are_not_a_loss() -> None:
    state = leader(revision=7)
    state = lease.apply(state, lease.LeaseSeen(free(6)))  # the marker we acquired over, delivered late
    state = lease.apply(state, lease.LeaseSeen(held(8, node="a", incarnation="me", epoch=7)))  # our renewal
    assert state.lost_reason is None
    assert state.term is not None and state.term.revision == 8 and state.term.renewed_at == 100.0


def test_a_refused_renewal_ends_the_term_and_stepping_down_returns_to_following() -> None:
    state = lease.apply(leader(), lease.TermOver("renewal refused"))
    assert lease.next_action(state, 100.1) == lease.StepDown(reason="renewal refused")
    state = lease.apply(state, lease.SteppedDown())
    assert state.phase is lease.Phase.FOLLOWING and state.term is None and state.last_holder == "a"


def test_facts_out_of_place_are_illegal_transitions() -> None:
    with pytest.raises(lease.IllegalTransition):
        lease.apply(follower(), lease.Renewed(revision=3, sent_at=0.0))
    with pytest.raises(lease.IllegalTransition):
        lease.apply(leader(), lease.Won(revision=9, sent_at=0.0))


@given(st.lists(st.tuples(st.sampled_from(["renew_ok", "renew_fail", "wait"]), st.floats(0.0, 2.0)), max_size=40))
def test_a_leader_never_may_act_past_ttl_after_its_last_acknowledged_send(steps: list[tuple[str, float]]) -> None:
    state, now, last_send = leader(won_at=0.0), 0.0, 0.0
    for what, dt_s in steps:
        now += dt_s
        action = lease.next_action(state, now)
        if isinstance(action, lease.StepDown):
            break
        assert now < last_send + TIMING.ttl_s - TIMING.safety_margin_s
        if isinstance(action, lease.Renew) and what == "renew_ok":
            state, last_send = lease.apply(state, lease.Renewed(revision=state.term.revision + 1, sent_at=now)), now  # type: ignore[union-attr]
        elif isinstance(action, lease.Renew):
            state = lease.apply(state, lease.RenewFailed(at=now))


# ---- lease records from stored messages ---------------------------------------------------


def test_records_from_stored_messages() -> None:
    value = msgspec.json.encode(LeaseValue(node="a", incarnation="i", epoch=4, ttl_s=2, acquired_at=T0))
    record = record_from("scheduler", 6, {"Nats-TTL": "2s"}, value, T0)
    assert record.state == "held" and record.epoch == 4 and not record.free
    acquiring = msgspec.json.encode(LeaseValue(node="a", incarnation="i", ttl_s=2, acquired_at=T0))
    first = record_from("scheduler", 4, None, acquiring, None)
    assert first.epoch == 4  # the acquiring write's epoch is its own revision
    assert record_from("scheduler", 7, {"Nats-Marker-Reason": "MaxAge"}, b"", None).state == "expired"
    assert record_from("scheduler", 7, {"KV-Operation": "DEL"}, b"", None).state == "deleted"
    assert record_from("scheduler", 7, {"KV-Operation": "PURGE"}, b"", None).state == "purged"
    assert record_from("scheduler", 7, None, b"not json", None).free


def test_headers_in_wire_form_are_parsed() -> None:
    assert parse_headers(b"NATS/1.0\r\nKV-Operation: DEL\r\nNats-TTL: 1s\r\n\r\n") == {"KV-Operation": "DEL", "Nats-TTL": "1s"}


# ---- the epoch fence -------------------------------------------------------------------------


def elected(role: str, node: str, epoch: int) -> LeaderElected:
    return LeaderElected(role=role, node=node, epoch=epoch)


def tick(epoch: int | None) -> ConfigChanged:
    return ConfigChanged(name="decision", epoch=epoch)


def test_decisions_of_a_superseded_term_are_dropped_and_counted() -> None:
    fence = EpochFence()
    assert fence.admit(elected("scheduler", "a", 10))
    assert fence.admit(tick(10))
    assert fence.admit(elected("scheduler", "b", 25))
    assert not fence.admit(tick(10))  # the old leader woke up
    assert fence.admit(tick(25))
    assert fence.admit(LeaderLost(role="scheduler", node="a", reason="paused", epoch=10))
    stats = fence.statistics()
    assert (stats.dropped_stale, stats.dropped_by_role, stats.elections) == (1, {"scheduler": 1}, 2)


def test_roles_are_fenced_independently() -> None:
    fence = EpochFence()
    for event in (elected("scheduler", "a", 3), elected("promoter", "b", 5), elected("scheduler", "c", 9)):
        fence.admit(event)
    assert fence.admit(WorkAssigned(work_id="w", node="n", attempt=1, deadline=T0, epoch=5))  # promoter's newest
    assert not fence.admit(tick(3))
    assert fence.judge_and_learn(tick(9)) is Verdict.CURRENT


def test_events_without_an_epoch_are_not_decisions_but_a_leader_decision_without_one_is_never_admitted() -> None:
    fence = EpochFence()
    fence.admit(elected("scheduler", "a", 10))
    assert fence.judge_and_learn(WorkStarted(work_id="w", node="n", attempt=1)) is Verdict.NOT_A_DECISION
    assert fence.judge_and_learn(WorkAttemptFailed(work_id="w", node="n", attempt=1, reason="x")) is Verdict.NOT_A_DECISION
    assert fence.judge_and_learn(tick(None)) is Verdict.NOT_A_DECISION  # operators record config changes too
    for decision in (HostOnline(node="n"), WorkAssigned(work_id="w", node="n", attempt=1, deadline=T0),
                     ModelPromoted(model_id="m", board_type="hex8", num_players=2, sha256="ab"), elected("scheduler", "b", 0)):
        assert fence.judge_and_learn(msgspec.structs.replace(decision, epoch=None)) is Verdict.NO_EPOCH
    assert fence.statistics().dropped_no_epoch == 4


def test_an_election_is_believed_only_from_a_candidate_announcing_its_own_win_with_an_unused_epoch() -> None:
    fence = EpochFence(candidates=("a", "b"))
    assert fence.judge_and_learn(elected("scheduler", "a", 10)) is Verdict.ELECTION
    forged = [
        elected("scheduler", "gpu-1", 999),  # not a candidate
        msgspec.structs.replace(elected("scheduler", "b", 999), source="a"),  # a announcing b's win
        elected("promoter", "b", 10),  # the scheduler's epoch, reused
    ]
    for event in forged:
        assert fence.judge_and_learn(event) is Verdict.UNBELIEVED_ELECTION
    assert fence.newest("scheduler") == 10 and fence.newest("promoter") is None
    assert fence.admit(tick(10)) and not fence.admit(tick(7))
    assert fence.statistics().unbelieved_elections == 3


def test_an_unnamed_epoch_is_taken_on_trust_only_by_a_fence_that_knows_no_election() -> None:
    fence = EpochFence()
    assert fence.admit(tick(40))  # a log whose elections aged out of retention
    assert not fence.admit(tick(30))  # older than an admitted unnamed epoch
    fence.admit(elected("scheduler", "a", 50))
    assert not fence.admit(tick(999))  # no election named it: made up
    assert not fence.admit(tick(7))
    assert fence.admit(tick(50))
    assert fence.statistics().dropped_unknown == 3


def test_a_late_election_of_an_older_epoch_is_stale() -> None:
    fence = EpochFence()
    fence.admit(elected("scheduler", "b", 25))
    assert not fence.admit(elected("scheduler", "a", 10))
    assert not fence.admit(tick(10))
    assert fence.newest("scheduler") == 25


@st.composite
def histories(draw: st.DrawFn) -> list[object]:
    """Logs of elections (unique epochs, any order, several roles) and decisions of already-elected epochs."""
    epochs = draw(st.lists(st.integers(1, 200), unique=True, min_size=1, max_size=12))
    roles = {e: draw(st.sampled_from(["scheduler", "promoter", "syncer"])) for e in epochs}
    log: list[object] = []
    announced: list[int] = []
    pending = list(epochs)
    for _ in range(draw(st.integers(1, 60))):
        if pending and (not announced or draw(st.booleans())):
            epoch = pending.pop(draw(st.integers(0, len(pending) - 1)))
            announced.append(epoch)
            log.append(elected(roles[epoch], "n", epoch))
        else:
            log.append(tick(draw(st.sampled_from(announced))))
    return log


@given(histories())
def test_admitted_decision_epochs_never_decrease_per_role(history: list[object]) -> None:
    fence = EpochFence()
    role_of: dict[int, str] = {}
    admitted: dict[str, list[int]] = {}
    for event in history:
        assert isinstance(event, (LeaderElected, ConfigChanged))
        if isinstance(event, LeaderElected):
            assert event.epoch is not None
            role_of[event.epoch] = event.role
            fence.admit(event)
        elif fence.admit(event):
            assert event.epoch is not None
            admitted.setdefault(role_of[event.epoch], []).append(event.epoch)
    for epochs in admitted.values():
        assert epochs == sorted(epochs)


@given(histories())
def test_every_decision_of_the_newest_term_is_admitted(history: list[object]) -> None:
    fence = EpochFence()
    newest: dict[str, int] = {}
    role_of: dict[int, str] = {}
    for event in history:
        if isinstance(event, LeaderElected):
            assert event.epoch is not None
            role_of[event.epoch] = event.role
            newest[event.role] = max(newest.get(event.role, 0), event.epoch)
            fence.admit(event)
        else:
            assert isinstance(event, ConfigChanged) and event.epoch is not None
            assert fence.admit(event) == (event.epoch == newest[role_of[event.epoch]])


# ---- candidacy and settings ------------------------------------------------------------------


def test_candidacy_comes_from_config_then_voters_then_everyone() -> None:
    assert candidacy("a", ["a", "b"], ["c"]).allowed
    assert not candidacy("c", ["a", "b"], ["c"]).allowed
    by_voters = candidacy("c", [], ["c", "d"])
    assert by_voters.allowed and by_voters.source == "hosts p2p_voters"
    assert not candidacy("e", [], ["c", "d"]).allowed
    anyone = candidacy("z", [], [])
    assert anyone.allowed and anyone.source == "everyone"
    assert "never campaigns" in candidacy("e", [], ["c"]).describe()


def test_settings_default_and_validate() -> None:
    settings = RrConfig().leadership
    assert (settings.ttl_s, settings.bucket) == (3.0, "rr_leases") and settings.renew_every_s == pytest.approx(1.0)
    for bad in ({"ttl_s": 2.5}, {"ttl_s": 0}, {"renew_every": 0.5}, {"bucket": "a.b"}, {"safety_margin": 0.6}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({"leadership": bad}, RrConfig)
    assert msgspec.convert({"leadership": {"ttl_s": 2, "candidates": ["a"]}}, RrConfig).leadership.candidates == ("a",)


def test_a_leadership_mistake_in_the_config_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text("leadership:\n  ttl_s: 1.5\n")
    with pytest.raises(InvalidConfig, match="leadership.*ttl_s must be a whole number"):
        load_config(path)
