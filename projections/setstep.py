"""The bundle's work events in one step for every part that reads them, while the set is held open.

An assignment, start or completion is read by four parts: the work fold moves the item, and the
data, models and Elo folds each ask the attempts rule (projections/attempts.py) and, for most
such events, only move their position. Folded part by part, each part goes through its own
dispatch and fence, and the rule runs three times over three equal values. Here one step per
event type does it for the set: the work part takes its fast path (`work.FAST_PATHS`, WORK_ADDED's
own step) once its fence finds the event current, the rule runs once per distinct attempts value
and fence answer (one value for all three parts in a set folded from sequence 1, see `shared`),
and each part's state is built in one replace. A batch's report and its copies, which
only the data part folds (with the taint and workrefs parts for a report), skip its fence's chain
of calls the same way. Whatever a step does not take (a fence that drops
or learns, a fast path that declines, anything raising) goes to the part's own fold, so states
and anomalies are that fold's; tests/test_set_step.py folds random logs both ways, part by part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from eventbus.events import (
    DataSyncComplete,
    DataSyncPlanned,
    Event,
    SelfplayComplete,
    WorkAdded,
    WorkAssigned,
    WorkCompleted,
    WorkProgress,
    WorkStarted,
)
from projections import data, elo, withdrawal, work
from projections.attempts import Attempts, learned_as
from projections.fence import FENCED_WITHOUT_EPOCH
from projections.fencing import ADMITTED, Verdict, judge

# The open set's fold of one part the general way (its own fold, an error recorded as its anomaly).
PartFold = Callable[[dict[str, Any], str, Event, int], None]
Step = Callable[[dict[str, Any], Event, int, PartFold], None]

_CURRENT = Verdict.CURRENT
_replace = msgspec.structs.replace
# The work part's step per type: one that declines (None) leaves the event to the work fold.
_WORK_STEPS: dict[type[Event], Callable[[work.WorkState, Any, int], work.WorkState | None]] = {
    **work.FAST_PATHS, WorkAdded: work.work_added,
}
# A worker's reports pass the fence without a call when they carry no epoch (`fence.judged`'s first test).
assert not {WorkStarted, WorkCompleted, WorkProgress} & FENCED_WITHOUT_EPOCH, "setstep must follow fence.judged"


def shared(parts: dict[str, Any]) -> None:
    """Let the data, models and Elo parts hold one attempts value when theirs are equal and empty (a set from sequence 1)."""
    first: Attempts = parts["data"].attempts
    rest = (parts["models"], parts["elo"])
    if not first.items and not first.completed and all(part.attempts == first for part in rest):
        for name in ("models", "elo"):
            parts[name] = _replace(parts[name], attempts=first)


def _passes(state: Any, event: Event) -> bool:
    """Whether `fence.judged` lets the event through to the fold leaving `state` as it is (else: the part's own fold)."""
    if event.epoch is None:
        return type(event) not in FENCED_WITHOUT_EPOCH
    return judge(state.fence.view, event) is _CURRENT  # a current decision: `fence.step` learns nothing from it


def work_part(parts: dict[str, Any], event: Event, seq: int, fold: PartFold) -> None:
    """The work part after one of `_WORK_STEPS`' events: its step when its fence lets it through unchanged."""
    state: work.WorkState = parts["work"]
    try:
        moved = _WORK_STEPS[type(event)](state, event, seq) if _passes(state, event) else None
        if moved is not None:
            parts["work"] = work.retired_due(moved, seq)
            return
    except Exception:  # noqa: BLE001, S110 - the work fold below folds it again and records what it raises
        pass
    fold(parts, "work", event, seq)


def attempt_parts(parts: dict[str, Any], event: Event, seq: int, fold: PartFold) -> None:
    """The models, data and Elo parts after an assignment, start or completion: the attempts rule once per value."""
    models_state, data_state, elo_state = parts["models"], parts["data"], parts["elo"]
    try:
        if event.epoch is None:
            asked = (True, True, True)
        else:
            asked = (judge(models_state.fence.view, event) in ADMITTED, judge(data_state.fence.view, event) in ADMITTED,
                     judge(elo.NO_FENCE, event) in ADMITTED)
        after = _learned((models_state.attempts, data_state.attempts, elo_state.attempts), asked, event, seq)
    except Exception:  # noqa: BLE001 - each part's own fold folds it again and records what it raises
        for name in ("models", "data", "elo"):
            fold(parts, name, event, seq)
        return
    parts["models"] = _replace(models_state, last_seq=seq, attempts=after[0])  # `models.apply` for the rule's types
    _data_part(parts, data_state, after[1], event, seq, fold)
    if type(event) is WorkCompleted:  # `elo.apply`: a completion also reaches the withdrawal rule
        parts["elo"] = _replace(elo_state, last_seq=seq, attempts=after[2],
                                withdrawals=withdrawal.apply(elo_state.withdrawals, event))
    else:
        parts["elo"] = _replace(elo_state, last_seq=seq, attempts=after[2])


def _learned(values: tuple[Attempts, Attempts, Attempts], asked: tuple[bool, bool, bool], event: Event,
             seq: int) -> list[Attempts]:
    # Each distinct (value, fence answer) once: the same value under the same answer gives the same value after.
    first = values[0]
    if values[1] is first and values[2] is first and asked[0] is asked[1] is asked[2]:  # a set from sequence 1
        once = learned_as(first, asked[0], event, seq)
        return [once, once, once]
    out: list[Attempts] = []
    for i, (value, admitted) in enumerate(zip(values, asked, strict=True)):
        for j in range(i):
            if values[j] is value and asked[j] is admitted:
                out.append(out[j])
                break
        else:
            out.append(learned_as(value, admitted, event, seq))
    return out


def _data_part(parts: dict[str, Any], state: data.DataState, attempts: Attempts, event: Event, seq: int, fold: PartFold) -> None:
    # `data.apply` for the rule's types, given the attempts after the event.
    if type(event) in withdrawal.KINDS:
        if event.epoch is not None:  # its fence judges it after the rule: the data fold's own way
            fold(parts, "data", event, seq)
            return
        try:
            moved = data.item_ended(state if attempts is state.attempts else _replace(state, attempts=attempts), event, seq)
            parts["data"] = data.retired_due(moved, seq)
        except Exception:  # noqa: BLE001 - the data fold folds it again and records what it raises
            fold(parts, "data", event, seq)
        return
    moved = _replace(state, last_seq=seq, attempts=attempts)
    try:
        parts["data"] = data.retired_due(moved, seq)
    except Exception:  # noqa: BLE001 - the data fold folds it again and records what it raises
        fold(parts, "data", event, seq)


def data_part(parts: dict[str, Any], event: Event, seq: int, fold: PartFold) -> None:
    """The data part after a batch's report or one of its copies: `data.admitted` when its fence lets it through unchanged."""
    state: data.DataState = parts["data"]
    try:
        if _passes(state, event):
            parts["data"] = data.retired_due(data.admitted(state, event, seq), seq)
            return
    except Exception:  # noqa: BLE001, S110 - the data fold below folds it again and records what it raises
        pass
    fold(parts, "data", event, seq)


def batch_reported(parts: dict[str, Any], event: Event, seq: int, fold: PartFold) -> None:
    """A selfplay batch, for the data part and (their own folds) the taint and workrefs parts."""
    data_part(parts, event, seq, fold)
    fold(parts, "taint", event, seq)
    fold(parts, "workrefs", event, seq)


def work_event(parts: dict[str, Any], event: Event, seq: int, fold: PartFold) -> None:
    """An assignment, start or completion, for the four parts that read it."""
    work_part(parts, event, seq, fold)
    attempt_parts(parts, event, seq, fold)


# Event type -> its step, and the parts each step folds (bundle.py checks them against its routes).
STEPS: dict[type[Event], Step] = {
    WorkAssigned: work_event, WorkStarted: work_event, WorkCompleted: work_event,
    WorkProgress: work_part, WorkAdded: work_part,
    SelfplayComplete: batch_reported, DataSyncPlanned: data_part, DataSyncComplete: data_part,
}
_PARTS_OF: dict[Step, frozenset[str]] = {
    work_event: frozenset({"work", "models", "data", "elo"}), work_part: frozenset({"work"}),
    batch_reported: frozenset({"data", "taint", "workrefs"}), data_part: frozenset({"data"}),
}
FOLDED: dict[type[Event], frozenset[str]] = {kind: _PARTS_OF[step] for kind, step in STEPS.items()}
