"""Whether a fence kept in a snapshot may seed a worker's first start on a log whose head retention trimmed, pure.

A first start folds the elections and lease copies the log still holds. Once retention trimmed
elections off its head, that fold knows less than a fold of the whole log: a term whose election
aged out is unknown, so its decisions are dropped as made up, and with no election known at all
any epoch is taken on trust. The leaders' cluster folds keep the whole log's fence in their
`cluster` snapshots, each at its stream position; folded on from there over what the log holds
after it, such a fence is the whole log's fold (a fold up to P and then over P+1..end is the fold
from the start). Only coordinators and admin may write the snapshot bucket (workers may not:
servicekit/auth/permissions.py), and the seed must also agree with what the server's records still
in the log say (`refusal`); otherwise the worker keeps the fold of the retained log.
"""

from __future__ import annotations

import msgspec

from eventbus.leasecopy import is_copy, origin_of
from eventbus.leaserecord import record_from
from projections.fencing import FenceView

Terms = dict[str, int]  # role -> the term (epoch) its newest lease copy in the log names


def seed_view(view: FenceView) -> FenceView:
    """A usable snapshot's fence (`seed_unusable`) as a worker's priming fold would have it."""
    # The cluster fold also judges the leader's membership decisions, so before the first election
    # it may have admitted an unnamed epoch (`newest_unknown`), which a worker's priming fold (elections
    # and copies alone) never does; once an election is known that epoch is never looked at again.
    return msgspec.structs.replace(view, newest_unknown=0)


def seed_unusable(view: FenceView, candidates: tuple[str, ...]) -> str:
    """Why a snapshot's fence cannot seed a worker's fence; "" when it can."""
    if view.candidates != candidates:
        return f"it believes the elections of {list(view.candidates) or 'any node'}, this worker those of {list(candidates) or 'any node'}"
    if not view.newest_known:
        return "it knows no election (nothing the log's fold lacks)"
    return ""


def copied_term(subject: str, data: bytes, headers: dict[str, str] | None) -> tuple[str, int] | None:
    """(role, epoch) of the term a lease copy names: a renewal's value, an acquisition's revision; None for a marker."""
    if not is_copy(subject):
        return None
    holder = record_from("", 0, None, data, None).holder
    origin = origin_of(headers)
    epoch = (holder.epoch or (origin.revision if origin is not None else 0)) if holder is not None else 0
    return (subject.split(".")[3], epoch) if epoch else None


def seed_only(seeded: FenceView, retained: FenceView) -> list[str]:
    """The roles whose newest term only the seed knows: their elections aged out of the log."""
    return sorted(seeded.newest.keys() - retained.newest.keys())


def refusal(seeded: FenceView, retained: FenceView, terms: Terms) -> str:
    """Why a seeded fence, folded to the log's end, cannot be the whole log's fold, given the retained log's; "" when it can be.

    It must know every epoch the retained log's fold knows, with the same role, and the same newest
    term of every role that fold knows. A role whose newest election aged out is named only by the
    seed: where the role's newest lease copy in the log (the server's, which no user may publish)
    names a term (`terms`), it must be the seed's newest, or a newer acquisition the seed awaits
    the election of.
    """
    if retained.verified and not seeded.verified:
        return "the log holds lease copies, and the snapshot's fence was never verified by one"
    for epoch, role in retained.role_of.items():
        if seeded.role_of.get(epoch) != role:
            return f"the log names epoch {epoch} for the {role} role, the snapshot's fence for {seeded.role_of.get(epoch)}"
    for role, epoch in retained.newest.items():
        if seeded.newest.get(role) != epoch:
            return f"the log's {role} term is at epoch {epoch}, the snapshot's fence at {seeded.newest.get(role)}"
    for role in seed_only(seeded, retained):
        term, newest = terms.get(role), seeded.newest[role]
        awaited = term is not None and term > newest and seeded.acquired.get(term, ("",))[0] == role
        if term is not None and term != newest and not awaited:
            return (f"the newest copy of the {role} lease in the log names the term at epoch {term}, "
                    f"the snapshot's fence {newest}")
    return ""
