"""Leader fencing inside a fold: a decision of a superseded leadership is dropped and counted, never applied.

The rule is projections/fencing.py's `judge` and `learn`, which the leaders' own EpochFence
follows too. EpochFence is a mutable object, and a fold's state must be an immutable value that
rebuilds identically and survives a snapshot, so the fence here keeps the rule's FenceView as
data (tests/test_projections.py checks the two agree on random logs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

from eventbus.events import Event, LeaderElected, LeaseWritten
from projections.fencing import ADMITTED, LEADER_DECISIONS, FenceView, Verdict, judge, learn, unbelieved_reason

# Epoch-less events the fence still looks at: leader decisions (refused without one) and the
# lease copies it learns the acquisitions from.
FENCED_WITHOUT_EPOCH: frozenset[type[Event]] = LEADER_DECISIONS | {LeaseWritten}

DROPPED_KEPT = 50  # the newest dropped decisions kept for forensics; `dropped` counts all

F = TypeVar("F", bound=Any)  # a projection state with a `fence` field


class FencedDecision(msgspec.Struct, frozen=True, kw_only=True):
    """An event the fence refused, and the sentence saying why."""

    seq: int
    type: str
    about: str
    epoch: int | None
    verdict: str
    reason: str
    source: str = ""


class Fence(msgspec.Struct, frozen=True, kw_only=True):
    """What the fence knows (newest epoch per role, role of each epoch) and what it dropped."""

    view: FenceView = msgspec.field(default_factory=FenceView)
    dropped: int = 0
    last_dropped: tuple[FencedDecision, ...] = ()


def reason(view: FenceView, event: Event, verdict: Verdict) -> str:
    """Why the fence refused an event, in a sentence."""
    epoch = event.epoch
    by = f" by {event.source}" if event.source else ""
    if verdict is Verdict.NO_EPOCH:
        return f"leader decision{by} without an epoch: only a leadership term publishes {event.type_name()}"
    if verdict is Verdict.UNBELIEVED_ELECTION:
        return unbelieved_reason(view, event)
    if verdict is Verdict.STALE:
        role = view.role_of[epoch]  # type: ignore[index]
        return f"stale decision of epoch {epoch}{by}: {role} leadership is at epoch {view.newest[role]}"
    if verdict is Verdict.STALE_ELECTION:
        role = getattr(event, "role", "?")
        return f"stale election of epoch {epoch}{by}: {role} leadership is at epoch {view.newest.get(role)}"
    if view.newest_known:
        return f"decision of epoch {epoch}{by} that no believed election announced (a made-up epoch)"
    return f"decision of epoch {epoch}{by} that no election announced, older than epoch {view.newest_unknown}"


def step(fence: Fence, event: Event, seq: int) -> tuple[Fence, bool]:
    """The fence after judging one event, and whether the event may take effect."""
    if event.epoch is None and type(event) not in FENCED_WITHOUT_EPOCH:
        return fence, True
    verdict = judge(fence.view, event)
    view = learn(fence.view, event, verdict)
    if verdict in ADMITTED:
        return (fence if view is fence.view else msgspec.structs.replace(fence, view=view)), True
    refused = FencedDecision(
        seq=seq, type=event.type_name(), about=event.aggregate_id(), epoch=event.epoch, verdict=verdict.value,
        reason=reason(fence.view, event, verdict), source=event.source,
    )
    return (
        msgspec.structs.replace(
            fence, view=view, dropped=fence.dropped + 1, last_dropped=(fence.last_dropped + (refused,))[-DROPPED_KEPT:]
        ),
        False,
    )


def believing(state: F, candidates: Sequence[str]) -> F:
    """`state` whose fence believes elections of these candidates only (empty: of any node).

    The candidates are configuration (leadership.candidates, else the hosts file's p2p_voters),
    given to a fold before it reads: the log cannot say who may lead, or a forged election could.
    """
    view = state.fence.view
    if view.candidates == tuple(candidates):
        return state
    fence = msgspec.structs.replace(state.fence, view=msgspec.structs.replace(view, candidates=tuple(candidates)))
    return msgspec.structs.replace(state, fence=fence)


_TEACHERS: frozenset[type[Event]] = frozenset({LeaderElected, LeaseWritten})


def judged(state: F, event: Event, seq: int) -> tuple[F, bool]:
    """`screen`, with an election or a lease copy (read by a fold only to teach its fence) folded as its position alone.

    The state, and whether the fold goes on to apply the event to it.
    """
    kind = type(event)
    if event.epoch is None and kind not in FENCED_WITHOUT_EPOCH:
        return state, True  # not a decision: most events, without a call
    state, admitted = screen(state, event, seq)
    if admitted and kind in _TEACHERS:
        return msgspec.structs.replace(state, last_seq=seq), False
    return state, admitted


def screen(state: F, event: Event, seq: int) -> tuple[F, bool]:
    """`state` with its fence updated by the event, and whether the event may take effect."""
    if event.epoch is None and type(event) not in FENCED_WITHOUT_EPOCH:
        return state, True
    fence, admitted = step(state.fence, event, seq)
    if fence is not state.fence:
        state = msgspec.structs.replace(state, fence=fence)
    if not admitted:
        state = msgspec.structs.replace(state, last_seq=seq)
    return state, admitted
