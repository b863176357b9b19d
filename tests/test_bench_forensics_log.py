"""bench_forensics' one pass over its log: it leaves the snapshots and service states that saving every one would."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from eventbus import events as ev
from eventbus.connection import Bus
from eventbus.errors import BusUnavailable
from eventbus.history import Record, last_sequence, replay
from eventbus.objectdelete import delete_object
from eventbus.objects import list_objects
from eventbus.snapshots import SNAPSHOT_BUCKET, kept_listing
from eventbus.streams import StreamSettings
from ops.bench.bench_forensics import SAVED_SERVICES
from ops.bench.bench_projection import fleet_log, publish_log
from ops.bench.common import fresh_events_stream
from ops.bench.forensics_log import SharedFolds, exact, keep_snapshots, retrying, survivors, write_density
from projections import bundle, models, timelinestart, workrefs
from projections.base import Folder
from projections.snapshotplan import SnapshotSettings
from projections.snapshotthinning import LADDER, fitting
from servicekit import workrefentries
from servicekit.rebuild import state_at_seq
from servicekit.snapshotting import ChainSaver, load_state
from servicekit.telemetry.permits import subject_covers
from services.distributor import agent as distributor_agent
from services.leader import distribution, syncplan
from services.sync import agent as sync_agent


def test_the_bench_catches_each_service_up_on_the_subjects_the_service_reads() -> None:
    # The lease copies included: a bench reading less than a service measures a cheaper start than it has.
    reads = {name: SAVED_SERVICES[name]()[1] for name in ("distributor_agent", "distribution_loop", "sync_agent", "sync_planner")}
    assert reads == {"distributor_agent": distributor_agent.CATCHUP_SUBJECTS, "distribution_loop": distribution.CATCHUP_SUBJECTS,
                     "sync_agent": sync_agent.CATCHUP_SUBJECTS, "sync_planner": syncplan.CATCHUP_SUBJECTS}
    assert all("rr.evt.lease.>" in subjects for subjects in reads.values())


def test_write_density_is_one_step_denser_than_the_one_that_fits() -> None:
    candidates = list(range(10, 22_001, 10))
    assert write_density(candidates, 10, 1.0, 1e12) is None  # everything fits
    budget = 3e6
    fits, _ = fitting({seq: seq * 10 for seq in candidates}, 10, budget)
    assert fits is not None and fits != LADDER[0]
    assert write_density(candidates, 10, 10.0, budget) == LADDER[LADDER.index(fits) - 1]


def test_the_survivors_of_a_denser_step_hold_those_of_a_sparser_one() -> None:
    candidates = list(range(100, 200_001, 100))
    assert survivors(candidates, 100, None) == candidates
    for denser, sparser in zip(LADDER, LADDER[1:], strict=False):
        kept = survivors(candidates, 100, sparser)
        assert set(kept) <= set(survivors(candidates, 100, denser)) and candidates[-1] in kept and len(kept) < len(candidates)


def test_exact_only_where_everything_was_written_or_the_budget_thinned_it() -> None:
    assert exact(None, 10, 10) and exact(LADDER[2], 10, 7)
    assert not exact(LADDER[2], 10, 10)


def test_a_fold_is_shared_until_its_services_read_different_records_and_forked_then() -> None:
    filters = {"models": ("rr.evt.model.>",), "typed": ("rr.evt.*.*.MODEL_PROMOTED.*",), "all": ("rr.evt.>",)}
    whole = Folder(bundle.PROJECTION)
    shared = SharedFolds([(filters[name], [models.PROJECTION]) for name in filters], whole)
    alone = {name: Folder(models.PROJECTION) for name in filters}
    events = list(fleet_log(3_000))
    for seq, event in enumerate(events, start=1):
        record = Record(seq, event.subject(), ev.encode(event), None)
        shared(record)
        whole(record)
        for name, fold in alone.items():
            if any(subject_covers(p, record.subject) for p in filters[name]):
                fold(record)
    got = dict(zip(filters, (state for _, state in shared.at(len(events))), strict=True))
    assert got == {name: msgspec.structs.replace(models.PROJECTION.finished(fold.state), last_seq=len(events))
                   for name, fold in alone.items()}
    assert got["typed"] != got["models"]  # a fold that reads promotions only is not the whole model aggregate's
    with pytest.raises(ValueError, match="rr.evt.model.*.X"):
        SharedFolds([(("rr.evt.model.*.X",), [])], whole)


async def test_retrying_tries_again_while_jetstream_does_not_answer_and_then_gives_up() -> None:
    calls: list[int] = []

    async def flaky(fails: int) -> str:
        calls.append(1)
        if len(calls) <= fails:
            raise BusUnavailable("no answer")
        return "done"

    assert await retrying("flaky", lambda: flaky(2), tries=3, first_wait_s=0.01) == "done" and len(calls) == 3
    calls.clear()

    async def slow() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError  # what nats-py raises when a consumer's creation is not answered
        return "done"

    assert await retrying("slow", slow, tries=2, first_wait_s=0.01) == "done" and len(calls) == 2
    calls.clear()
    with pytest.raises(BusUnavailable):
        await retrying("flaky", lambda: flaky(5), tries=2, first_wait_s=0.01)
    assert len(calls) == 2


async def _save_every_one(bus: Bus, until: int, every: int, settings: SnapshotSettings) -> None:
    # The services' way: a snapshot every `every` records, each saved with its parts (and the bucket pruned) as it comes.
    saver = ChainSaver(bus, settings)
    for seq in range(every, until + 1, every):
        state = (await state_at_seq(bus, bundle.PROJECTION, seq)).state
        await saver.save_all([(bundle.PROJECTION, state), *((part, of(state)) for part, of in bundle.saved_parts()),
                              (workrefs.PROJECTION, state.workrefs), (timelinestart.PROJECTION, state.cluster)])


async def _service_states(bus: Bus, at: int) -> list[Any]:
    # Each service's folds read through its own consumer filters up to `at`, as a leader would have them.
    out = []
    for make in SAVED_SERVICES.values():
        folds, subjects = make()
        for record in await _records_on(bus, subjects, at):
            for fold in folds:
                fold(record)
        # At position `at`: each fold has seen every record up to it, read or not.
        out += [msgspec.structs.replace(fold.projection.finished(fold.state), last_seq=at) for fold in folds]
    return out


async def _records_on(bus: Bus, subjects: tuple[str, ...], at: int) -> list[Record]:
    # One consumer per filter, each record once (the filters overlap): the server still picks a service's records, and
    # single-filter reads take 0.3 s where one consumer with a sync agent's 14 filters took 25 s at load 9.
    records: dict[int, Record] = {}
    for subject in subjects:
        await replay(bus, lambda record: records.setdefault(record.seq, record), subject=subject, end_seq=at)
    return sorted(records.values(), key=lambda r: r.seq)


async def _kept_bundles(bus: Bus) -> dict[int, bundle.ProjectionSet]:
    listing, _ = await kept_listing(bus)
    seqs = [kept.seq for kept in listing if kept.name == bundle.PROJECTION.name]
    out = {}
    for seq in seqs:
        loaded = await load_state(bus, bundle.PROJECTION, "test", not_after_seq=seq)
        assert loaded is not None and loaded.header.last_seq == seq
        out[seq] = loaded.state
    return out


# A generous bound, not a speed check: 25 s at load 23 (177 s there with the 12,000 records it used to publish).
@pytest.mark.timeout(400)
async def test_one_pass_keeps_what_saving_every_snapshot_and_thinning_keeps(bus: Bus) -> None:
    await fresh_events_stream(bus, StreamSettings())
    # 23 candidates, of which the budget keeps 7 and the pass writes 13, on the same rung of the ladder as 12,000 records
    # under twice the budget (47, 8 and 15): the reference's cost grows faster than the log, the checks do not gain.
    await publish_log(bus, 6_000, chunk_size=2_000)
    end, every, max_gib = await last_sequence(bus), 250, 0.00025  # a budget the thinning has to meet
    settings = SnapshotSettings(every_events=every, max_kept=10_000, max_gib=max_gib, delta_links=0)
    await _save_every_one(bus, end - every, every, settings)
    expected = await _kept_bundles(bus)
    await _empty_bucket(bus)

    written, captured = await keep_snapshots(bus, end - every, every, max_gib, SAVED_SERVICES, end - 1_000, end - 100,
                                             delta_links=0)

    assert written.density is not None and len(written.written) < written.candidates  # it skipped some
    kept = await _kept_bundles(bus)
    assert exact(written.density, len(written.written), len(kept))
    assert sorted(kept) == sorted(expected) and len(kept) < written.candidates
    assert kept == expected  # the same states (maps compare by content: a fold's order of keys is its own)
    assert [state for _, state in captured] == await _service_states(bus, end - 1_000)
    position = await workrefentries.read_position(bus)  # written past the snapshots, as the API writes it between them
    assert position is not None and position.last_seq == end - 100


async def _empty_bucket(bus: Bus) -> None:
    for obj in await list_objects(bus, SNAPSHOT_BUCKET):
        await delete_object(bus, SNAPSHOT_BUCKET, obj.name)


async def test_with_deltas_the_pass_writes_every_candidate_and_keeps_the_chains_the_services_would(bus: Bus) -> None:
    await fresh_events_stream(bus, StreamSettings())
    # 13 candidates, 8 kept: a full snapshot, its chain of 4 deltas, and the next chain begun (the link limit), as with
    # 6,000 records (23 candidates, 9 kept): fewer records, the same shapes.
    await publish_log(bus, 3_500, chunk_size=2_000)
    end, every, max_gib = await last_sequence(bus), 250, 0.000035  # a budget the thinning has to meet, even with deltas
    settings = SnapshotSettings(every_events=every, max_kept=10_000, max_gib=max_gib, delta_links=4, delta_min_bytes=0, delta_over=0)
    await _save_every_one(bus, end - every, every, settings)
    expected, expected_points = await _kept_bundles(bus), await _points(bus)
    await _empty_bucket(bus)

    written, _ = await keep_snapshots(bus, end - every, every, max_gib, SAVED_SERVICES, end - 1_000, delta_links=4,
                                      delta_min_bytes=0, delta_over=0)

    assert len(written.written) == written.candidates and written.density is None
    points = await _points(bus)
    assert points == expected_points and any(points.values()) and len(points) < written.candidates  # thinned, chains kept
    assert await _kept_bundles(bus) == expected


async def _points(bus: Bus) -> dict[int, int]:
    listing, _ = await kept_listing(bus)
    return {kept.seq: kept.prev for kept in listing if kept.name == bundle.PROJECTION.name}
