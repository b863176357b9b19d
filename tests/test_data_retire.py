"""Settled batches and their copies retire from the data fold: its snapshots stop growing with history, and no reader loses what it reads."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from cli.commands.data import data_view
from config.sections.sync import SyncSettings
from eventbus import events as ev
from eventbus.publisher import Publisher
from projections import data
from projections.base import Folder, fold_events
from projections.snapshot import decode_snapshot, encode_snapshot
from projections.syncwork import SYNC_REQUESTS, SyncDone, SyncFailed, SyncWaiting, sync_step
from servicekit.livefold import LiveFold, aggregate_subjects, read_subjects, type_subjects
from servicekit.rebuild import state_at_seq, store
from services.leader.transfers import Fleet, plan_transfers
from tests.bus_harness import provisioned_bus
from tests.terms import decided, in_term
from tests.test_projections import LOGS, PROPERTY, T0, numbered

NEVER = 10**12  # a retire_after no log reaches: the fold as it was before batches retired
TRAINER = "gpu-9"
NODES = ("gpu-1", "gpu-2", "gpu-3")


def _fold(events: Sequence[tuple[int, ev.Event]], retire_after: int, state: data.DataState | None = None) -> data.DataState:
    return fold_events(data.PROJECTION, events, state or data.DataState(retire_after=retire_after))


def _views(state: data.DataState) -> dict[str, object]:
    """What `rr data` (its totals), `rr status`, the dashboard and the API read of the state."""
    view = data_view(state, T0 + dt.timedelta(days=1), limit=0)
    view = msgspec.structs.replace(view, retired_batches=0)  # the one line it adds: how many are not listed
    return {"configs": state.configs, "transfer_counts": state.transfer_counts, "rr data": view,
            "anomaly_count": state.anomaly_count, "last_seq": state.last_seq}


def _job(i: int, *, copy_ok: bool = True) -> list[ev.Event]:
    """A selfplay job's batch, its item's completion, and one copy of the batch to the trainer."""
    w, b, node = f"w-{i}", f"b-{i}", NODES[i % 3]
    at = T0 + dt.timedelta(seconds=i)
    made = ev.ArtifactRef(path=f"/d/{b}.npz", size_bytes=1000 + i, sha256=f"{i:064x}", node=node)
    return [
        ev.SelfplayComplete(batch_id=b, work_id=w, node=node, board_type="hex8", num_players=2, num_games=10 + i,
                            num_samples=100, data=made, ts=at),
        ev.WorkCompleted(work_id=w, node=node, attempt=1, ts=at),
        ev.DataSyncPlanned(batch_id=b, transfer_id=f"{b}>{TRAINER}#1", from_node=node, to_node=TRAINER, size_bytes=1000 + i, ts=at),
        ev.DataSyncComplete(batch_id=b, transfer_id=f"{b}>{TRAINER}#1", to_node=TRAINER, ok=copy_ok, ts=at,
                            error="" if copy_ok else "disk full"),
    ]


def _fleet(count: int) -> list[ev.Event]:
    """Jobs with their copies, a failed copy planned again, a failed item completed late, a cancelled one, a copy in flight."""
    log: list[ev.Event] = []
    for i in range(count):
        log += _job(i, copy_ok=i % 7 != 3)
        if i % 7 == 3:  # planned again after the failure, and done
            log += [ev.DataSyncPlanned(batch_id=f"b-{i}", transfer_id=f"b-{i}>{TRAINER}#2", from_node=NODES[i % 3],
                                       to_node=TRAINER, size_bytes=1000 + i),
                    ev.DataSyncComplete(batch_id=f"b-{i}", transfer_id=f"b-{i}>{TRAINER}#2", to_node=TRAINER, ok=True)]
        if i == 5:
            log.append(ev.WorkFailed(work_id="w-5", reason="3 attempts failed"))  # withdrawn: its batch stays
        if i == 6:
            log.append(ev.WorkCancelled(work_id="w-6"))  # withdrawn for good
        if i == 8:  # a copy that never ends: the batch stays while it is in flight
            log.append(ev.DataSyncPlanned(batch_id="b-8", transfer_id="b-8>gpu-1#1", from_node="gpu-2", to_node="gpu-1"))
    log.append(ev.WorkCompleted(work_id="w-5", node=NODES[2], attempt=1))  # completed late: counts again
    return in_term(log)


def test_the_state_holds_the_recent_and_unsettled_batches_only_and_every_reader_sees_what_it_saw() -> None:
    events = numbered(_fleet(300))
    state, unretired = _fold(events, 100), _fold(events, NEVER)
    assert len(state.batches) <= 40 and len(state.retired) >= 260, (len(state.batches), len(state.retired))
    assert len(state.transfers) <= 50 and len(state.scheduled) <= 130
    assert _views(state) == _views(unretired)
    assert {"b-5", "b-6", "b-8"} <= set(state.batches.keys()), "withdrawn ones and one with a copy in flight stay"
    # A kept batch holds its file for the sync agents (upload from it, name it in a sync item's output).
    assert state.batches["b-299"].file == ev.ArtifactRef(path="/d/b-299.npz", size_bytes=1299, sha256=f"{299:064x}", node="gpu-3")
    small, whole = len(encode_snapshot(data.PROJECTION, state)), len(encode_snapshot(data.PROJECTION, unretired))
    assert small * 4 < whole, (small, whole)
    # The planner and the sync items decide the same on what is kept; a retired batch is refused by name.
    fleet = Fleet(targets=frozenset({TRAINER, "gpu-4"}), alive=frozenset({*NODES, TRAINER, "gpu-4"}))
    settings = SyncSettings(max_batch_age_h=10**6, max_plans_per_tick=10**6, max_inflight_per_node=10**6)
    kept = {b for b in unretired.batches.keys() if b not in state.retired}
    planned = plan_transfers(unretired, fleet, T0, settings)
    assert plan_transfers(state, fleet, T0, settings) == [p for p in planned if p.batch_id in kept]
    for batch_id in kept:
        assert sync_step(batch_id, TRAINER, state) == sync_step(batch_id, TRAINER, unretired)
    assert isinstance(sync_step("b-8", "gpu-1", state), SyncWaiting) and isinstance(sync_step("b-299", TRAINER, state), SyncDone)
    step = sync_step("b-0", "gpu-4", state)
    assert isinstance(step, SyncFailed) and "retired" in step.reason


def test_a_batch_whose_report_names_no_node_for_its_file_holds_it_on_the_reporting_node() -> None:
    report = msgspec.structs.replace(_job(4)[0], data=ev.ArtifactRef(path="/d/b-4.npz", size_bytes=1, sha256="ab"))
    state = _fold(numbered([report]), NEVER)
    assert state.batches["b-4"].file == ev.ArtifactRef(path="/d/b-4.npz", size_bytes=1, sha256="ab", node="gpu-2")


def test_a_repeated_report_or_copy_of_a_retired_batch_is_refused_as_before() -> None:
    log = _fleet(300)
    log += [_job(0)[0], _job(1)[3], decided(ev.DataSyncPlanned(batch_id="b-2", transfer_id="b-2>gpu-4#1", from_node="gpu-3",
                                                                to_node="gpu-4"))]
    state = _fold(numbered(log), 100)
    reasons = [a.reason for a in state.anomalies[-3:]]
    assert "already reported" in reasons[0] and "retired" in reasons[1] and "retired" in reasons[2]
    assert state.configs == _fold(numbered(_fleet(300)), NEVER).configs


def test_a_batch_with_a_copy_in_flight_retires_once_the_copy_ended_and_retire_after_records_passed() -> None:
    head = in_term([*_job(0)[:3]])  # planned, not ended
    filler = [ev.WorkCompleted(work_id=f"x-{i}", node="gpu-1", attempt=1) for i in range(30)]
    state = _fold(numbered([*head, *filler]), 10)
    assert "b-0" in state.batches and "b-0>gpu-9#1" in state.transfers
    end = ev.DataSyncComplete(batch_id="b-0", transfer_id="b-0>gpu-9#1", to_node=TRAINER, ok=True)
    events = numbered([*head, *filler, end, *filler])
    ended_at = len(head) + len(filler) + 1
    before = _fold(events[: ended_at + 9], 10, None)
    assert "b-0" in before.batches
    after = _fold(events[: ended_at + 10], 10, None)
    assert "b-0" not in after.batches and not after.transfers and after.retired.to_dict() == {"b-0": "10"}
    assert data.retired_games(after, "b-0") == 10 and data.retired_games(after, "b-1") is None
    assert after.configs == _fold(events, NEVER).configs


def test_a_retired_batch_keeps_counting_when_its_item_is_failed_or_cancelled_after_it_settled() -> None:
    # The work fold refuses ending a completed item; the data fold no longer holds the batch to withdraw it.
    log = _fleet(300)
    state = _fold(numbered([*log, ev.WorkCancelled(work_id="w-0")]), 100)
    assert "b-0" in state.retired and state.configs == _fold(numbered(log), 100).configs


def _resumed(events: Sequence[tuple[int, ev.Event]], cut: int, retire_after: int) -> data.DataState:
    """The fold of `events[:cut]` through a snapshot's bytes, then of the rest: what a service started at `cut` holds."""
    snapshot = decode_snapshot(data.PROJECTION, encode_snapshot(data.PROJECTION, _fold(events[:cut], retire_after)))
    assert snapshot is not None
    return _fold(events[cut:], retire_after, snapshot.state)


@PROPERTY
@given(LOGS, st.integers(min_value=1, max_value=12))
def test_a_fold_resumed_anywhere_from_a_snapshot_equals_the_whole_fold_and_keeps_what_the_unretired_fold_has(
    log: list[ev.Event], retire_after: int
) -> None:
    events = numbered(log)
    whole, unretired = _fold(events, retire_after), _fold(events, NEVER)
    assert all(_resumed(events, cut, retire_after) == whole for cut in range(0, len(events) + 1, 7))
    assert set(whole.batches.keys()) | set(whole.retired.keys()) == set(unretired.batches.keys())
    assert not set(whole.batches.keys()) & set(whole.retired.keys())
    assert all(unretired.batches[b] == batch for b, batch in whole.batches.items())
    assert all(unretired.transfers[t] == copy and t in whole.copies[copy.batch_id] for t, copy in whole.transfers.items())
    assert all(unretired.batches[b].num_games == data.retired_games(whole, b) for b in whole.retired.keys())


def test_a_fold_whose_first_record_comes_late_in_the_log_does_not_walk_every_earlier_sequence() -> None:
    late = [(10**9 + i, e) for i, e in enumerate(in_term(_job(0)), 1)]  # the log's older records aged out
    state = _fold(late, 100)
    assert state.retired_through < min(state.scheduled.keys()) and len(state.batches) == 1


def test_the_sync_services_read_the_work_types_their_folds_read_not_every_progress_report() -> None:
    subjects = read_subjects("work", data.PROJECTION, SYNC_REQUESTS)
    assert "rr.evt.*.*.WORK_COMPLETED.*" in subjects and "rr.evt.*.*.WORK_ADDED.*" in subjects
    assert not any("WORK_PROGRESS" in s for s in subjects) and all(".WORK_" in s for s in subjects)


# ---- a started service folds the same view from a snapshot with retired batches plus the tail ----------------

SMALL = dataclasses.replace(data.PROJECTION, initial=lambda: data.DataState(retire_after=40))
SUBJECTS = (*aggregate_subjects("data", "leader", "lease"), *type_subjects(("WORK_COMPLETED", "WORK_FAILED", "WORK_CANCELLED")))


async def test_a_service_started_from_a_snapshot_with_retired_batches_has_the_view_of_a_fold_from_sequence_1(
    nats_url: str,
) -> None:
    log = _fleet(120)
    async with provisioned_bus(nats_url) as bus:
        publisher = Publisher(bus)
        await publisher.publish_many(log[: len(log) // 2])
        saved = await state_at_seq(bus, SMALL, use_snapshot=False)
        assert saved.state.retired, "some batches retired before the snapshot"
        await store(bus, SMALL, saved.state)
        await publisher.publish_many(log[len(log) // 2:])
        service = Folder(SMALL)
        live = LiveFold(bus, [service], SUBJECTS)
        await live.catch_up()
        assert live.snapshot_seq == saved.state.last_seq
        scratch = await state_at_seq(bus, SMALL, use_snapshot=False)
        unretired = await state_at_seq(bus, data.PROJECTION, use_snapshot=False)
        assert service.state.batches == scratch.state.batches and service.state.retired == scratch.state.retired
        assert service.state.configs == unretired.state.configs
        shown, whole = data_view(service.state, T0, 5), data_view(unretired.state, T0, 5)
        assert shown.retired_batches == len(scratch.state.retired) and shown == msgspec.structs.replace(whole, retired_batches=shown.retired_batches)
        assert len(service.state.batches) < len(unretired.state.batches) // 2
