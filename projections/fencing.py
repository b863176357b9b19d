"""The epoch fence, pure: drop a leader's decisions once a newer leader of the same role was elected.

Epochs are revisions of one lease bucket, so they are unique across roles and grow with
time. The fence learns which role each epoch belongs to from LEADER_ELECTED events; a
decision (any event carrying an epoch) is admitted iff its epoch is the newest known for
its role. A leader's decision (a type in LEADER_DECISIONS) without an epoch is never admitted
(`needs_epoch`): only a term stamps one, and terms have stamped one since the first release, so
an epoch-less promotion or assignment is no leader's, whether or not the fence has seen an election.

An election is believed only if a candidate (when the fence knows the candidates) announces its
own win (its `node` is the publishing `source`, which the subject/body check ties to the subject
the server's permissions granted) with an epoch no other role's election used. A decision of
an epoch no believed election named is dropped: a term announces itself before it decides, so
such an epoch is made up. Only a fence that knows no election at all (a log whose elections
aged out of retention) admits an unnamed epoch, if it is not older than one admitted before.

Verified against the lease: the server copies every write of the lease bucket into the log
(LEASE_WRITTEN, eventbus/leasecopy.py), which no client can publish. Once a fence has seen
any copy it is "verified": it believes LEADER_ELECTED {role R, node N, epoch E} only if the
copy of revision E was an acquiring write of R's lease naming N (the elector waits for that
copy before announcing, so log order puts it first), and it compares a verified election only
with verified epochs, so a made-up epoch believed before the first copy cannot block the real
elections after it. A fence that never saw a copy (a log written before the bucket was
sourced) keeps the rules above.
"""

from __future__ import annotations

import enum

import msgspec

from eventbus.authority import AUTHORITY
from eventbus.events import EVENT_TYPES, Event, LeaderElected, LeaderLost, LeaseWritten

# Event types only a leader's term publishes, from the authority table: those only coordinators
# own (WORK_ADDED, WORK_ATTEMPT_FAILED, CONFIG_CHANGED ... are also a person's or a worker's, so
# they are judged by epoch only when they carry one). LEADER_LOST ends a term and is always admitted.
LEADER_DECISIONS: frozenset[type[Event]] = frozenset(
    EVENT_TYPES[name] for name, grant in AUTHORITY.items() if grant.roles == {"coordinator"} and name != "LEADER_LOST"
)


class Verdict(enum.Enum):
    """What the fence decided about one event, and why."""

    NOT_A_DECISION = "not_a_decision"  # no epoch: not a leader's decision, always admitted
    ELECTION = "election"  # a LEADER_ELECTED at least as new as any known for its role
    STALE_ELECTION = "stale_election"  # a LEADER_ELECTED older than one already seen for its role
    TERM_END = "term_end"  # a LEADER_LOST: a fact about a term, always admitted
    CURRENT = "current"  # a decision of the newest term of its role
    STALE = "stale"  # a decision of a superseded term: dropped
    UNKNOWN_NEW = "unknown_new"  # a decision of an unnamed epoch, to a fence that knows no election: admitted
    UNKNOWN_OLD = "unknown_old"  # a decision of an epoch no believed election named: dropped
    NO_EPOCH = "no_epoch"  # a leader decision (or election) without an epoch: dropped
    UNBELIEVED_ELECTION = "unbelieved_election"  # announced by another node, or reusing another role's epoch


ADMITTED = frozenset({Verdict.NOT_A_DECISION, Verdict.ELECTION, Verdict.TERM_END, Verdict.CURRENT, Verdict.UNKNOWN_NEW})


class FenceStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of one fence; `dropped_by_role` counts stale decisions per role."""

    admitted: int = 0
    elections: int = 0
    stale_elections: int = 0
    dropped_stale: int = 0
    dropped_unknown: int = 0
    dropped_no_epoch: int = 0
    unbelieved_elections: int = 0
    dropped_by_role: dict[str, int] = {}

    @property
    def dropped(self) -> int:
        """Every decision the fence refused."""
        return (self.dropped_stale + self.dropped_unknown + self.stale_elections + self.dropped_no_epoch
                + self.unbelieved_elections)


class FenceView(msgspec.Struct, frozen=True, kw_only=True):
    """What a fence knows: the newest epoch per role, and which role each named epoch belongs to."""

    newest: dict[str, int] = {}
    role_of: dict[int, str] = {}
    newest_known: int = 0  # highest epoch any election named
    newest_unknown: int = 0  # highest unnamed epoch admitted
    candidates: tuple[str, ...] = ()  # nodes whose elections are believed; empty: any node's
    verified: bool = False  # a lease copy was seen: elections are believed only with their acquisition's copy
    acquired: dict[int, tuple[str, str]] = {}  # revision -> (role, node) of acquiring writes not yet announced
    trusted: dict[str, int] = {}  # newest verified epoch per role (verified mode only)


ACQUIRED_KEPT = 256  # acquisitions awaiting their election; older ones are dropped (never announced)


def judge(view: FenceView, event: Event) -> Verdict:
    """The verdict on one event given what the fence knows before it."""
    epoch = event.epoch
    if epoch is None:
        return Verdict.NO_EPOCH if needs_epoch(view, event) else Verdict.NOT_A_DECISION
    if isinstance(event, LeaderLost):
        return Verdict.TERM_END
    if isinstance(event, LeaderElected):
        if not believable(view, event):
            return Verdict.UNBELIEVED_ELECTION
        if view.verified:
            if not acquisition_logged(view, event):
                return Verdict.UNBELIEVED_ELECTION
            return Verdict.ELECTION if epoch >= view.trusted.get(event.role, 0) else Verdict.STALE_ELECTION
        return Verdict.ELECTION if epoch >= view.newest.get(event.role, 0) else Verdict.STALE_ELECTION
    role = view.role_of.get(epoch)
    if role is not None:
        # Equal, not "at least": a verified election may bring the newest epoch below one believed
        # before the first copy, whose decisions are then stale.
        return Verdict.CURRENT if epoch == view.newest[role] else Verdict.STALE
    # Only a fence that knows no election at all (a log whose elections aged out of retention) takes
    # an unnamed epoch on trust; once elections are known, an epoch none of them named is made up.
    if view.newest_known == 0 and epoch >= view.newest_unknown:
        return Verdict.UNKNOWN_NEW
    return Verdict.UNKNOWN_OLD


def needs_epoch(view: FenceView, event: Event) -> bool:
    """Whether an epoch-less event is a leader decision that cannot be admitted without one.

    Elections and every type only a leader's term publishes need one, whatever the fence knows:
    a fence that has seen no election yet (a fresh log before its first term, a fold that starts
    where none is in view) would otherwise take a forged epoch-less promotion on trust. Every
    term has stamped its epoch since the first release, so no genuine decision lacks one; a
    fold whose elections aged out of the log starts from a snapshot that keeps its fence.
    """
    return isinstance(event, LeaderElected) or type(event) in LEADER_DECISIONS


def believable(view: FenceView, event: LeaderElected) -> bool:
    """Whether an election can be a lease's: a candidate announces its own win, with an epoch no other role has."""
    if event.source and event.source != event.node:
        return False
    if view.candidates and event.node not in view.candidates:
        return False
    other = view.role_of.get(event.epoch) if event.epoch is not None else None
    return other is None or other == event.role


def acquisition_logged(view: FenceView, event: LeaderElected) -> bool:
    """Whether the log holds the copy of an acquiring write of the election's role, naming its node, at its epoch."""
    return event.epoch is not None and view.acquired.get(event.epoch) == (event.role, event.node)


def unbelieved_reason(view: FenceView, event: Event) -> str:
    """Why an election is not believed, in a sentence."""
    if isinstance(event, LeaderElected) and event.source and event.source != event.node:
        return f"election of {event.node} announced by {event.source}: a node announces only its own win"
    if isinstance(event, LeaderElected) and view.candidates and event.node not in view.candidates:
        return f"election of {event.node}, which is not a candidate ({', '.join(view.candidates)})"
    if isinstance(event, LeaderElected) and view.verified and not acquisition_logged(view, event):
        return (f"no acquisition of the {event.role} lease at revision {event.epoch} by {event.node} in the log: "
                "a made-up epoch")
    other = view.role_of.get(event.epoch) if event.epoch is not None else None
    return f"election reuses epoch {event.epoch} of the {other} role: epochs are unique lease revisions"


def learn(view: FenceView, event: Event, verdict: Verdict) -> FenceView:
    """What the fence knows after an event it judged: the one rule EpochFence and the folds' Fence both follow."""
    epoch = event.epoch
    if isinstance(event, LeaseWritten):
        return copied(view, event)
    if epoch is None or verdict is Verdict.UNBELIEVED_ELECTION:
        return view
    if isinstance(event, LeaderElected):
        if verdict is not Verdict.ELECTION:
            return msgspec.structs.replace(view, role_of={**view.role_of, epoch: event.role},
                                           newest_known=max(view.newest_known, epoch))
        changes: dict[str, object] = {}
        if view.verified:  # acquisitions older than the role's newest term will never be announced
            changes["trusted"] = {**view.trusted, event.role: epoch}
            changes["acquired"] = {r: a for r, a in view.acquired.items() if a[0] != event.role or r >= epoch}
        return msgspec.structs.replace(
            view, newest={**view.newest, event.role: epoch}, role_of={**view.role_of, epoch: event.role},
            newest_known=max(view.newest_known, epoch), **changes,
        )
    if verdict is Verdict.UNKNOWN_NEW:
        return msgspec.structs.replace(view, newest_unknown=epoch)
    return view


def copied(view: FenceView, copy: LeaseWritten) -> FenceView:
    """What the fence knows after a lease copy: it is verified from now on, and an acquisition awaits its election."""
    if not (copy.acquiring and copy.node is not None and copy.revision > view.trusted.get(copy.role, 0)):
        return view if view.verified else msgspec.structs.replace(view, verified=True)
    acquired = {**view.acquired, copy.revision: (copy.role, copy.node)}
    if len(acquired) > ACQUIRED_KEPT:
        acquired = dict(sorted(acquired.items())[-ACQUIRED_KEPT:])
    return msgspec.structs.replace(view, verified=True, acquired=acquired)


class EpochFence:
    """Folds events in log order and says which of them may take effect; no I/O."""

    def __init__(self, candidates: tuple[str, ...] = ()) -> None:
        # `learn` replaces the view's maps instead of changing them, so judging against the live
        # view needs no copy; only an election (rare) copies them.
        self._view = FenceView(candidates=tuple(candidates))
        self._counts = {v: 0 for v in Verdict}
        self._dropped_by_role: dict[str, int] = {}

    @classmethod
    def resumed(cls, view: FenceView) -> EpochFence:
        """A fence that knows what `view` says (one saved earlier), its counters at zero."""
        fence = cls(view.candidates)
        fence._view = view
        return fence

    def view(self) -> FenceView:
        """A snapshot of what the fence knows."""
        v = self._view
        return msgspec.structs.replace(v, newest=dict(v.newest), role_of=dict(v.role_of), acquired=dict(v.acquired),
                                       trusted=dict(v.trusted))

    def verified(self) -> bool:
        """Whether the fence has seen a lease copy (elections are then believed only with their acquisition's copy)."""
        return self._view.verified

    def newest(self, role: str) -> int | None:
        """The newest epoch elected for a role so far."""
        return self._view.newest.get(role)

    def admit(self, event: Event) -> bool:
        """Whether the event may take effect; learns from elections as it goes."""
        return self.judge_and_learn(event) in ADMITTED

    def judge_and_learn(self, event: Event) -> Verdict:
        """The event's verdict, after which the fence knows what the event taught it."""
        verdict = judge(self._view, event)
        self._counts[verdict] += 1
        if verdict is Verdict.STALE and event.epoch is not None:
            role = self._view.role_of[event.epoch]
            self._dropped_by_role[role] = self._dropped_by_role.get(role, 0) + 1
        self._view = learn(self._view, event, verdict)
        return verdict

    def statistics(self) -> FenceStatistics:
        """Counters so far."""
        c = self._counts
        return FenceStatistics(
            admitted=sum(c[v] for v in ADMITTED),
            elections=c[Verdict.ELECTION],
            stale_elections=c[Verdict.STALE_ELECTION],
            dropped_stale=c[Verdict.STALE],
            dropped_unknown=c[Verdict.UNKNOWN_OLD],
            dropped_no_epoch=c[Verdict.NO_EPOCH],
            unbelieved_elections=c[Verdict.UNBELIEVED_ELECTION],
            dropped_by_role=dict(self._dropped_by_role),
        )
