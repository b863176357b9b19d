"""`/election/start` and `/lease/request` on the leadership KV lease: the bodies, the answers and the rules, pure.

A role's leader is whoever holds its lease key (cluster/leadership/election.py). Asking it to step
down is a compare-and-set delete of that key at the holder's revision, which the server enforces:
the leader sees its key deleted (its watch, or its next renewal refused), stops deciding and
appends LEADER_LOST; the candidates campaign and the winner appends LEADER_ELECTED with a newer
epoch, which fences out any late decision of the old term. A lease is only ever taken by a
candidate's own elector, never by the API for it: the holder must renew it every third of its TTL.
"""

from __future__ import annotations

from typing import Annotated, Protocol

import msgspec

from eventbus.leases import LeaseRecord
from services.api.nodework import NodeId

RoleName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]
RELEASE_TRIES = 3  # a renewal between our read and our delete moves the revision: read again


class ElectionStartBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /election/start: ask the current leader of `role` to step down, so that the candidates elect again."""

    role: RoleName = "scheduler"
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class ElectionStartDoc(msgspec.Struct, frozen=True, kw_only=True):
    """POST /election/start's answer: whose lease was released, at which epoch."""

    success: bool
    role: str
    previous_leader: str
    epoch: int
    released_revision: int
    detail: str


class LeaseRequestBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /lease/request: may `node_id` (default: the token's user) lead `role`, and does it?"""

    role: RoleName = "scheduler"
    node_id: NodeId | None = None


class LeaseRequestDoc(msgspec.Struct, frozen=True, kw_only=True):
    """POST /lease/request's answer: granted when the node holds the lease now."""

    success: bool
    role: str
    node_id: str
    granted: bool
    holder: str | None
    epoch: int | None
    detail: str


class LeaseKeys(Protocol):
    """The leadership bucket as these endpoints use it."""

    async def read(self, role: str) -> LeaseRecord:
        """The role's lease key now."""

    async def release(self, role: str, revision: int) -> None:
        """Delete the key if it is still at `revision` (ConcurrencyConflict otherwise)."""


def not_held(record: LeaseRecord) -> str:
    """Why there is no leader to ask to step down."""
    return (f"role {record.role} has no leader now (its lease is {record.state}): the candidates are electing one; "
            "GET /election/status shows the winner")


def not_a_candidate(node: str, candidates: tuple[str, ...]) -> str | None:
    """Why `node` may not lead (leadership.candidates, else the hosts file's p2p_voters); None when it may."""
    if not candidates or node in candidates:
        return None
    return f"node_id: {node} is not a leadership candidate (candidates: {', '.join(candidates)}); see leadership.candidates"


def lease_answer(record: LeaseRecord, node: str) -> tuple[int, LeaseRequestDoc]:
    """The status and answer of a lease request by `node`: 200 granted or free, 409 held by another."""
    holder = record.holder.node if record.holder is not None else None
    if holder == node:
        detail = f"{node} holds the {record.role} lease (epoch {record.epoch}); its elector renews it"
        status = 200
    elif holder is None:
        detail = (f"the {record.role} lease is {record.state}: {node}'s elector campaigns for it if it runs "
                  "the scheduler service; GET /election/status shows the winner")
        status = 200
    else:
        detail = (f"{holder} holds the {record.role} lease (epoch {record.epoch}); a lease is taken only by a candidate's "
                  "own elector: POST /election/start asks the holder to step down")
        status = 409
    doc = LeaseRequestDoc(success=status == 200, role=record.role, node_id=node, granted=holder == node, holder=holder,
                          epoch=record.epoch, detail=detail)
    return status, doc


def released(record: LeaseRecord) -> ElectionStartDoc:
    """The answer once the holder's lease key is deleted."""
    assert record.holder is not None
    detail = (f"{record.holder.node} steps down as {record.role} leader (LEADER_LOST) and the candidates elect a leader "
              f"with an epoch past {record.epoch} (LEADER_ELECTED); on a one-candidate cluster it is elected again")
    return ElectionStartDoc(success=True, role=record.role, previous_leader=record.holder.node, epoch=record.epoch or 0,
                            released_revision=record.revision, detail=detail)
