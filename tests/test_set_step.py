"""The bundle's work events in one step for all their parts: every part as its own fold leaves it (pure, no server)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import events as ev
from eventbus.history import Record
from projections import bundle, data, work
from projections.attempts import Attempts, ItemAttempts
from projections.base import Folder
from projections.pmap import PMap
from tests.test_projections import LOGS, PROPERTY, T0, _spoiled, records
from tests.test_report_runs import reporting_logs

PER_EVENT = dataclasses.replace(bundle.PROJECTION, folding=None)  # bundle.apply: each part's own fold, event by event

# Retiring soon: work items, batches and attempts retire inside the logs; one attempts value for three parts.
_SOON = Attempts(retire_after=3, span=2)
RETIRING = bundle.ProjectionSet(
    work=work.WorkState(retire_after=3), data=data.DataState(retire_after=4, attempts=_SOON),
    models=bundle.models.ModelsState(attempts=_SOON), elo=bundle.elo.EloState(attempts=_SOON),
)


def _known(work_id: str) -> Attempts:
    return Attempts(items=PMap({work_id: ItemAttempts(1, "gpu-1", ((1, "gpu-2"),))}))


# Equal attempts, three values (as a set decoded from a snapshot holds them): the rule runs for each.
APART = bundle.ProjectionSet(
    data=data.DataState(attempts=_known("w-1")), models=bundle.models.ModelsState(attempts=_known("w-1")),
    elo=bundle.elo.EloState(attempts=_known("w-1")),
)
STARTS = (bundle.ProjectionSet(), RETIRING, APART)


def _part_by_part(start: bundle.ProjectionSet, stored: list[Record], reads: set[int]) -> None:
    stepped, per_event = Folder(bundle.PROJECTION, start), Folder(PER_EVENT, start)
    for i, record in enumerate(stored):
        stepped(record)
        per_event(record)
        if i in reads or i == len(stored) - 1:
            ours, theirs = bundle.aligned(stepped.state), bundle.aligned(per_event.state)
            for name in bundle.PARTS:
                assert getattr(ours, name) == getattr(theirs, name), f"{name} differs after seq {record.seq}"
            assert ours == theirs


@PROPERTY
@given(st.one_of(LOGS, reporting_logs()), st.data())
def test_the_set_step_leaves_every_part_as_its_own_fold_does(log: list[ev.Event], data_: st.DataObject) -> None:
    stored = _spoiled(log, data_)
    reads = set(data_.draw(st.lists(st.integers(0, len(stored)), max_size=4)))
    for start in STARTS:
        _part_by_part(start, stored, reads)


def _healthy_life(w: str, node: str) -> list[ev.Event]:
    return [
        ev.WorkAdded(work_id=w, work_type="selfplay", board_type="hex8", num_players=2, epoch=1, source="gpu-1", ts=T0),
        ev.WorkAssigned(work_id=w, node=node, attempt=1, deadline=T0, epoch=1, source="gpu-1", ts=T0),
        ev.WorkStarted(work_id=w, node=node, attempt=1, source=node, ts=T0),
        ev.WorkProgress(work_id=w, node=node, attempt=1, fraction=0.5, source=node, ts=T0),
        ev.WorkCompleted(work_id=w, node=node, attempt=1, source=node, ts=T0),
        ev.SelfplayComplete(batch_id=f"b{w}", work_id=w, node=node, board_type="hex8", num_players=2, num_games=10,
                            attempt=1, source=node, ts=T0),
        ev.DataSyncPlanned(batch_id=f"b{w}", transfer_id=f"t{w}", from_node=node, to_node="gpu-1", epoch=1, source="gpu-1",
                           ts=T0),
        ev.DataSyncComplete(batch_id=f"b{w}", transfer_id=f"t{w}", to_node="gpu-1", source="gpu-1", ts=T0),
    ]


def test_a_healthy_life_takes_the_step_for_every_part_and_one_attempts_value(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[ev.Event] = [ev.LeaderElected(role="scheduler", node="gpu-1", epoch=1, source="gpu-1", ts=T0)]
    log += _healthy_life("w-1", "gpu-2") + _healthy_life("w-2", "gpu-3")
    folded_apart: list[tuple[str, str]] = []
    part_folded = bundle._part_folded

    def counting(parts: dict[str, Any], name: str, event: ev.Event, seq: int) -> None:
        folded_apart.append((name, event.type_name()))
        part_folded(parts, name, event, seq)

    monkeypatch.setattr(bundle, "_part_folded", counting)
    stepped, per_event = Folder(bundle.PROJECTION), Folder(PER_EVENT)
    for record in records(log):
        stepped(record)
        per_event(record)
    state = bundle.aligned(stepped.state)
    assert folded_apart == [("taint", "SELFPLAY_COMPLETE"), ("workrefs", "SELFPLAY_COMPLETE")] * 2  # only their own folds
    assert state.data.attempts is state.models.attempts is state.elo.attempts
    assert state == bundle.aligned(per_event.state)
    assert state.work.counts == {"completed": 2} and len(state.data.attempts.items) == 2
    assert state.data.transfer_counts == {"done": 2} and state.data.configs["hex8_2p"].games == 20


def test_a_stale_assignment_goes_to_each_fenced_part_own_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[ev.Event] = [
        ev.LeaderElected(role="scheduler", node="gpu-1", epoch=1, source="gpu-1", ts=T0),
        ev.WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, source="gpu-1", ts=T0),
        ev.LeaderElected(role="scheduler", node="gpu-2", epoch=2, source="gpu-2", ts=T0),
        ev.WorkAssigned(work_id="w-1", node="gpu-3", attempt=1, deadline=T0, epoch=1, source="gpu-1", ts=T0),
    ]
    folded_apart: list[str] = []
    part_folded = bundle._part_folded
    monkeypatch.setattr(bundle, "_part_folded", lambda parts, name, event, seq: (folded_apart.append(name),
                                                                                 part_folded(parts, name, event, seq)))
    stepped, per_event = Folder(bundle.PROJECTION), Folder(PER_EVENT)
    for record in records(log):
        stepped(record)
        per_event(record)
    state = bundle.aligned(stepped.state)
    assert folded_apart == ["work"]  # the work fence drops it (and counts it); the attempts rule judges it itself
    assert state == bundle.aligned(per_event.state)
    assert state.work.fence.dropped == 1 and state.work.items["w-1"].status is work.WorkStatus.PENDING
    assert "w-1" in state.elo.attempts.items and "w-1" not in state.data.attempts.items  # Elo keeps no fence
