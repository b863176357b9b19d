"""The epoch fence, pure: drop a leader's decisions once a newer leader of the same role was elected.

Epochs are revisions of one lease bucket, so they are unique across roles and grow with
time. The fence learns which role each epoch belongs to from LEADER_ELECTED events; a
decision (any event carrying an epoch) is admitted iff its epoch is the newest known for
its role. A decision whose epoch no election has named yet is admitted only if it is newer
than every epoch known (a fence that started reading mid-log); such unknown epochs are
treated as one role, so even they never go backwards.
"""

from __future__ import annotations

import enum

import msgspec

from eventbus.events import Event, LeaderElected, LeaderLost


class Verdict(enum.Enum):
    """What the fence decided about one event, and why."""

    NOT_A_DECISION = "not_a_decision"  # no epoch: not a leader's decision, always admitted
    ELECTION = "election"  # a LEADER_ELECTED at least as new as any known for its role
    STALE_ELECTION = "stale_election"  # a LEADER_ELECTED older than one already seen for its role
    TERM_END = "term_end"  # a LEADER_LOST: a fact about a term, always admitted
    CURRENT = "current"  # a decision of the newest term of its role
    STALE = "stale"  # a decision of a superseded term: dropped
    UNKNOWN_NEW = "unknown_new"  # a decision of an epoch no election named, newer than all: admitted
    UNKNOWN_OLD = "unknown_old"  # a decision of an unnamed epoch that is not newer than all: dropped


ADMITTED = frozenset({Verdict.NOT_A_DECISION, Verdict.ELECTION, Verdict.TERM_END, Verdict.CURRENT, Verdict.UNKNOWN_NEW})


class FenceStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of one fence; `dropped_by_role` counts stale decisions per role."""

    admitted: int = 0
    elections: int = 0
    stale_elections: int = 0
    dropped_stale: int = 0
    dropped_unknown: int = 0
    dropped_by_role: dict[str, int] = {}

    @property
    def dropped(self) -> int:
        """Every decision the fence refused."""
        return self.dropped_stale + self.dropped_unknown + self.stale_elections


class FenceView(msgspec.Struct, frozen=True, kw_only=True):
    """What a fence knows: the newest epoch per role, and which role each named epoch belongs to."""

    newest: dict[str, int] = {}
    role_of: dict[int, str] = {}
    newest_known: int = 0  # highest epoch any election named
    newest_unknown: int = 0  # highest unnamed epoch admitted


def judge(view: FenceView, event: Event) -> Verdict:
    """The verdict on one event given what the fence knows before it."""
    epoch = event.epoch
    if epoch is None:
        return Verdict.NOT_A_DECISION
    if isinstance(event, LeaderLost):
        return Verdict.TERM_END
    if isinstance(event, LeaderElected):
        return Verdict.ELECTION if epoch >= view.newest.get(event.role, 0) else Verdict.STALE_ELECTION
    role = view.role_of.get(epoch)
    if role is not None:
        return Verdict.CURRENT if epoch >= view.newest[role] else Verdict.STALE
    if epoch > view.newest_known and epoch >= view.newest_unknown:
        return Verdict.UNKNOWN_NEW
    return Verdict.UNKNOWN_OLD


class EpochFence:
    """Folds events in log order and says which of them may take effect; no I/O."""

    def __init__(self) -> None:
        self._newest: dict[str, int] = {}
        self._role_of: dict[int, str] = {}
        self._newest_known = 0
        self._newest_unknown = 0
        self._counts = {v: 0 for v in Verdict}
        self._dropped_by_role: dict[str, int] = {}

    def view(self) -> FenceView:
        """A snapshot of what the fence knows."""
        return FenceView(
            newest=dict(self._newest),
            role_of=dict(self._role_of),
            newest_known=self._newest_known,
            newest_unknown=self._newest_unknown,
        )

    def newest(self, role: str) -> int | None:
        """The newest epoch elected for a role so far."""
        return self._newest.get(role)

    def admit(self, event: Event) -> bool:
        """Whether the event may take effect; learns from elections as it goes."""
        return self.judge_and_learn(event) in ADMITTED

    def judge_and_learn(self, event: Event) -> Verdict:
        """The event's verdict, after which the fence knows what the event taught it."""
        verdict = judge(self._live_view(), event)
        self._counts[verdict] += 1
        epoch = event.epoch
        if isinstance(event, LeaderElected) and epoch is not None:
            self._role_of[epoch] = event.role
            self._newest_known = max(self._newest_known, epoch)
            if verdict is Verdict.ELECTION:
                self._newest[event.role] = epoch
        elif verdict is Verdict.UNKNOWN_NEW and epoch is not None:
            self._newest_unknown = epoch
        elif verdict is Verdict.STALE and epoch is not None:
            role = self._role_of[epoch]
            self._dropped_by_role[role] = self._dropped_by_role.get(role, 0) + 1
        return verdict

    def _live_view(self) -> FenceView:
        # judge() only reads; handing it the live dicts avoids copying them for every event.
        return FenceView(
            newest=self._newest,
            role_of=self._role_of,
            newest_known=self._newest_known,
            newest_unknown=self._newest_unknown,
        )

    def statistics(self) -> FenceStatistics:
        """Counters so far."""
        c = self._counts
        return FenceStatistics(
            admitted=sum(c[v] for v in ADMITTED),
            elections=c[Verdict.ELECTION],
            stale_elections=c[Verdict.STALE_ELECTION],
            dropped_stale=c[Verdict.STALE],
            dropped_unknown=c[Verdict.UNKNOWN_OLD],
            dropped_by_role=dict(self._dropped_by_role),
        )
