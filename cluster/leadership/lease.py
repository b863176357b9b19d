"""Lease bookkeeping for one role on one node, pure: when to campaign, renew, step down or wait.

The shell (election.py) feeds facts in (`apply`) and asks what to do next (`next_action`),
passing its monotonic clock. A leader's right to act ends at its deadline: the moment it SENT
the last successful create/renew request, plus the TTL, minus a safety margin. The server
starts the TTL when it stores the write, which is after the send, so the leader always stops
before the server can hand the lease to anyone else, whatever happened in between (a pause,
a lost connection, a slow ack).
"""

from __future__ import annotations

import enum
from typing import Union

import msgspec

from eventbus.leases import LeaseRecord


class Phase(enum.Enum):
    """Where one node stands for one role."""

    OBSERVING = "observing"  # not a candidate: watches, never campaigns
    FOLLOWING = "following"  # a candidate without the lease
    LEADING = "leading"  # holds the lease


class IllegalTransition(Exception):
    """A fact arrived in a phase that cannot take it: a bug in the shell."""


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    """The pace of one elector, in seconds."""

    ttl_s: float
    renew_every_s: float
    safety_margin_s: float
    poll_s: float  # a follower re-reads the key this often even if its watch is silent
    retry_s: float  # pause after a request that got no answer


def timing_for(ttl_s: float, renew_every: float = 1 / 3, safety_margin: float = 0.2) -> Timing:
    """Timing from a TTL and the fractions of it the settings give."""
    return Timing(
        ttl_s=ttl_s,
        renew_every_s=ttl_s * renew_every,
        safety_margin_s=ttl_s * safety_margin,
        poll_s=ttl_s / 2,
        retry_s=ttl_s / 20,
    )


class LeaseTerm(msgspec.Struct, frozen=True, kw_only=True):
    """One leadership term: its epoch, its current revision, and when its last renewal was sent."""

    role: str
    node: str
    epoch: int  # revision of the acquiring write: the fencing epoch
    revision: int  # revision of the latest write of this term; the next renewal expects it
    ttl_s: float
    safety_margin_s: float
    renewed_at: float  # monotonic time the acquiring or latest acknowledged renewal request was SENT
    previous_node: str | None = None
    retry_at: float = 0.0  # after a failed renewal, not before this


def act_deadline(renewed_at: float, ttl_s: float, safety_margin_s: float) -> float:
    """The last moment a leader may act on a lease whose last renewal was sent at `renewed_at`."""
    return renewed_at + ttl_s - safety_margin_s


def may_act(term: LeaseTerm, now: float) -> bool:
    """Whether the leader of `term` may still take decisions at monotonic time `now`."""
    return now < act_deadline(term.renewed_at, term.ttl_s, term.safety_margin_s)


# ---- facts the shell reports ---------------------------------------------------------


class LeaseSeen(msgspec.Struct, frozen=True):
    """The key was read or watched."""

    record: LeaseRecord


class Won(msgspec.Struct, frozen=True):
    """Our acquiring write was acknowledged at `revision`; it was sent at `sent_at`."""

    revision: int
    sent_at: float
    previous_node: str | None = None  # the holder before us, as the campaign saw it


class CampaignFailed(msgspec.Struct, frozen=True):
    """An acquiring write got no answer at `at`; try again a little later."""

    at: float


class Renewed(msgspec.Struct, frozen=True):
    """A renewal was acknowledged at `revision`; it was sent at `sent_at`."""

    revision: int
    sent_at: float


class RenewFailed(msgspec.Struct, frozen=True):
    """A renewal got no answer at `at`; retry a little later, while the deadline keeps running."""

    at: float


class TermOver(msgspec.Struct, frozen=True):
    """The term is known to be over (a renewal's compare-and-set failed, the leader's work failed)."""

    reason: str


class SteppedDown(msgspec.Struct, frozen=True):
    """The shell stopped the leader's work and announced the loss."""


Fact = Union[LeaseSeen, Won, CampaignFailed, Renewed, RenewFailed, TermOver, SteppedDown]

TRANSITIONS: dict[Phase, dict[type, Phase]] = {
    Phase.OBSERVING: {LeaseSeen: Phase.OBSERVING},
    Phase.FOLLOWING: {LeaseSeen: Phase.FOLLOWING, Won: Phase.LEADING, CampaignFailed: Phase.FOLLOWING},
    Phase.LEADING: {
        LeaseSeen: Phase.LEADING,
        Renewed: Phase.LEADING,
        RenewFailed: Phase.LEADING,
        TermOver: Phase.LEADING,
        SteppedDown: Phase.FOLLOWING,
    },
}


# ---- what the shell should do next ---------------------------------------------------


class Campaign(msgspec.Struct, frozen=True):
    """Try to acquire the lease, expecting the key's last revision to be `expect_revision`."""

    expect_revision: int
    previous_node: str | None = None  # who held it last, for the LEADER_ELECTED event


class Renew(msgspec.Struct, frozen=True):
    """Extend the lease, expecting it still at `revision`; give up at `deadline`."""

    revision: int
    deadline: float


class StepDown(msgspec.Struct, frozen=True):
    """Stop acting now and announce why."""

    reason: str


class Wait(msgspec.Struct, frozen=True):
    """Nothing to do before `until` unless the key changes."""

    until: float


Action = Union[Campaign, Renew, StepDown, Wait]


class ElectorState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one node knows about one role's lease."""

    role: str
    node: str
    incarnation: str
    phase: Phase
    timing: Timing
    record: LeaseRecord | None = None  # the key as last seen
    term: LeaseTerm | None = None  # set while LEADING
    lost_reason: str | None = None  # set while LEADING once the term is known to be over
    last_holder: str | None = None  # node that held the lease last time we saw it held
    campaign_retry_at: float = 0.0


def initial_state(role: str, node: str, incarnation: str, timing: Timing, *, candidate: bool) -> ElectorState:
    """A node's state before it has seen the key."""
    phase = Phase.FOLLOWING if candidate else Phase.OBSERVING
    return ElectorState(role=role, node=node, incarnation=incarnation, phase=phase, timing=timing)


def is_mine(state: ElectorState, record: LeaseRecord) -> bool:
    """Whether this very process (node and incarnation) wrote the record."""
    holder = record.holder
    return holder is not None and holder.node == state.node and holder.incarnation == state.incarnation


def may_take(state: ElectorState, record: LeaseRecord) -> bool:
    """Whether a campaign over this record can be right: free, or a lease this process wrote but lost track of."""
    return record.free or is_mine(state, record)


def apply(state: ElectorState, fact: Fact) -> ElectorState:
    """The state after a fact; raises IllegalTransition for a fact the phase cannot take."""
    target = TRANSITIONS[state.phase].get(type(fact))
    if target is None:
        raise IllegalTransition(f"{type(fact).__name__} while {state.phase.value} ({state.role})")
    if isinstance(fact, LeaseSeen):
        return _seen(state, fact.record)
    if isinstance(fact, Won):
        return _won(state, fact)
    if isinstance(fact, CampaignFailed):
        return msgspec.structs.replace(state, campaign_retry_at=fact.at + state.timing.retry_s)
    if isinstance(fact, SteppedDown):
        return msgspec.structs.replace(state, phase=Phase.FOLLOWING, term=None, lost_reason=None, last_holder=state.node)
    return _leading(state, fact)


def _seen(state: ElectorState, record: LeaseRecord) -> ElectorState:
    last_holder = record.holder.node if record.holder is not None else state.last_holder
    if state.phase is Phase.LEADING:
        return _seen_while_leading(msgspec.structs.replace(state, last_holder=last_holder), record)
    known = state.record
    # Reads and the watch race; an older revision is stale, except "absent" (revision 0),
    # which a read reports once the expiry marker itself has gone.
    if known is not None and record.revision < known.revision and record.revision != 0:
        return state
    return msgspec.structs.replace(state, record=record, last_holder=last_holder)


def _seen_while_leading(state: ElectorState, record: LeaseRecord) -> ElectorState:
    term = state.term
    assert term is not None
    if record.revision <= term.revision:
        return state  # from before our latest write
    if is_mine(state, record) and record.epoch == term.epoch:
        # Our own renewal, seen before (or instead of) its ack: expect it next, but the
        # deadline stays where the acknowledged sends put it.
        return msgspec.structs.replace(state, record=record, term=msgspec.structs.replace(term, revision=record.revision))
    reason = f"lease {record.state}" if record.holder is None else f"superseded by {record.holder.node}"
    return msgspec.structs.replace(state, record=record, lost_reason=state.lost_reason or reason)


def _won(state: ElectorState, fact: Won) -> ElectorState:
    term = LeaseTerm(
        role=state.role,
        node=state.node,
        epoch=fact.revision,
        revision=fact.revision,
        ttl_s=state.timing.ttl_s,
        safety_margin_s=state.timing.safety_margin_s,
        renewed_at=fact.sent_at,
        previous_node=fact.previous_node,
    )
    return msgspec.structs.replace(state, phase=Phase.LEADING, term=term, lost_reason=None)


def _leading(state: ElectorState, fact: Fact) -> ElectorState:
    term = state.term
    assert term is not None
    if isinstance(fact, Renewed):
        term = msgspec.structs.replace(
            term, revision=max(term.revision, fact.revision), renewed_at=max(term.renewed_at, fact.sent_at), retry_at=0.0
        )
        return msgspec.structs.replace(state, term=term)
    if isinstance(fact, RenewFailed):
        return msgspec.structs.replace(state, term=msgspec.structs.replace(term, retry_at=fact.at + state.timing.retry_s))
    assert isinstance(fact, TermOver)
    return msgspec.structs.replace(state, lost_reason=state.lost_reason or fact.reason)


def next_action(state: ElectorState, now: float) -> Action:
    """What the shell should do at monotonic time `now`."""
    timing = state.timing
    if state.phase is Phase.LEADING:
        return _leader_action(state, now)
    record = state.record
    if state.phase is Phase.OBSERVING or record is None or not may_take(state, record):
        return Wait(until=now + timing.poll_s)
    if now < state.campaign_retry_at:
        return Wait(until=state.campaign_retry_at)
    return Campaign(expect_revision=record.revision, previous_node=state.last_holder)


def _leader_action(state: ElectorState, now: float) -> Action:
    term = state.term
    assert term is not None
    if state.lost_reason is not None:
        return StepDown(reason=state.lost_reason)
    deadline = act_deadline(term.renewed_at, term.ttl_s, term.safety_margin_s)
    if now >= deadline:
        return StepDown(reason="lease not renewed before its deadline")
    renew_at = max(term.renewed_at + state.timing.renew_every_s, term.retry_at)
    if now >= renew_at:
        return Renew(revision=term.revision, deadline=deadline)
    return Wait(until=min(renew_at, deadline))
