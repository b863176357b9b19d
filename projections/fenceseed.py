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

from eventbus.leasecopy import is_copy
from eventbus.leaserecord import record_from
from projections.fencing import FenceView

Terms = dict[str, set[int]]  # role -> the terms (epochs) the lease copies the log still holds name


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


def copied_term(subject: str, data: bytes) -> tuple[str, int] | None:
    """(role, epoch) of the term a lease copy's value names: a renewal's or a release's; None for an acquisition or a marker."""
    if not is_copy(subject):
        return None
    holder = record_from("", 0, None, data, None).holder
    return None if holder is None or not holder.epoch else (subject.split(".")[3], holder.epoch)


def refusal(seeded: FenceView, retained: FenceView, terms: Terms) -> str:
    """Why a seeded fence, folded to the log's end, cannot be the whole log's fold, given the retained log's; "" when it can be.

    It must know every epoch the retained log's fold knows, with the same role, and the same newest
    term of every role that fold knows. A role whose newest election aged out is named only by the
    seed: where the lease copies the log still holds (the server's, which no user may publish) name
    a term of that role, it must be the seed's.
    """
    if retained.verified and not seeded.verified:
        return "the log holds lease copies, and the snapshot's fence was never verified by one"
    for epoch, role in retained.role_of.items():
        if seeded.role_of.get(epoch) != role:
            return f"the log names epoch {epoch} for the {role} role, the snapshot's fence for {seeded.role_of.get(epoch)}"
    for role, epoch in retained.newest.items():
        if seeded.newest.get(role) != epoch:
            return f"the log's {role} term is at epoch {epoch}, the snapshot's fence at {seeded.newest.get(role)}"
    for role, epoch in seeded.newest.items():
        other = sorted(terms.get(role, set()) - {epoch}) if role not in retained.newest else []
        if other:
            return f"the lease copies the log holds name the {role} term at epoch {other[-1]}, the snapshot's fence {epoch}"
    return ""
