"""A worker's first start on a log whose elections aged out knows what a worker that read the whole log knows, from the
leaders' cluster snapshot; a snapshot the log does not back is not used (issue 19).
"""

from __future__ import annotations

import msgspec
from nats.js.kv import KeyValue

from eventbus.connection import Bus
from eventbus.events import WorkAssigned
from eventbus.history import last_sequence
from eventbus.leaserecord import LeaseValue, encode_value
from eventbus.leases import DEFAULT_BUCKET
from ops.bench.bench_projection import fleet_log
from projections import cluster
from projections.cluster import ClusterState
from projections.fencing import FenceView
from servicekit.rebuild import state_at_seq
from servicekit.snapshotting import save_state
from tests.bus_harness import provisioned_bus
from tests.test_worker_first_start import (
    ACQUIRED_AT,
    CANDIDATES,
    NAMES,
    _context_caught_up,
    _filler,
    _full_read,
    _primed,
    _trim_log,
    _year_in_small,
)


async def _leaders_fold(bus: Bus) -> ClusterState:
    """The cluster as a leader's fold of the whole log has it (the distribution loop and the API save it as a snapshot)."""
    return (await state_at_seq(bus, cluster.PROJECTION, use_snapshot=False, candidates=CANDIDATES)).state


async def _renew(kv: KeyValue, node: str, role: str, epoch: int) -> None:
    await kv.put(role, encode_value(LeaseValue(node=node, incarnation=f"{node}-{role}", epoch=epoch, ttl_s=3,
                                               acquired_at=ACQUIRED_AT)))


def _with_view(state: ClusterState, **changes: object) -> ClusterState:
    view = msgspec.structs.replace(state.fence.view, **changes)
    return msgspec.structs.replace(state, fence=msgspec.structs.replace(state.fence, view=view))


async def _log_whose_elections_aged_out(one: Bus, two: Bus) -> tuple[ClusterState, FenceView]:
    """Terms of two roles, the leaders' cluster fold of the log then, the scheduler's term renewing on, and retention
    trimming every election off the log's head (the fold's position kept); the fold, and the whole log's fence."""
    kv = await one.js.key_value(DEFAULT_BUCKET)
    await _year_in_small(one, two, kv)
    leaders = await _leaders_fold(one)
    events = fleet_log(3_000)
    await _filler(one, events, 300)
    await _renew(kv, "c-2", "scheduler", leaders.fence.view.newest["scheduler"])
    await _filler(one, events, 300)
    full = await _full_read(one)
    await _trim_log(one, 650)
    assert (await _full_read(one)).role_of == {} and leaders.last_seq >= (await one.js.stream_info("RR_EVENTS")).state.first_seq
    await _context_caught_up(one)
    return leaders, full


async def test_a_first_start_on_a_log_whose_elections_aged_out_knows_what_a_worker_that_read_it_all_knows(
        nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="c-1") as one, provisioned_bus(nats_url, node_id="c-2") as two:
        leaders, full = await _log_whose_elections_aged_out(one, two)
        await save_state(one, cluster.PROJECTION, leaders)

        fresh = await _primed(one)
        assert fresh.primed_by == "snapshot"
        for name in NAMES:
            assert fresh.fence(name).view() == full
        end = await last_sequence(one)
        deposed = min(e for e, role in full.role_of.items() if role == "scheduler")
        old = WorkAssigned(work_id="w-1", node="gpu-1", attempt=1, deadline=ACQUIRED_AT, epoch=deposed)
        current = msgspec.structs.replace(old, work_id="w-2", epoch=full.newest["scheduler"])
        assert not await fresh.admit("assignments", old, end + 1)  # the deposed term's, whose election aged out
        assert await fresh.admit("assignments", current, end + 2)  # the current term's, whose election aged out too


async def test_a_snapshot_fence_the_trimmed_log_does_not_back_leaves_the_first_start_to_the_logs_fold(
        nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="c-1") as one, provisioned_bus(nats_url, node_id="c-2") as two:
        leaders, full = await _log_whose_elections_aged_out(one, two)
        retained = await _full_read(one)  # what a first start knew before: the fold of what the log still holds

        async def first_start_with(seed: ClusterState) -> str:
            await save_state(one, cluster.PROJECTION, seed)
            primed = await _primed(one)
            assert all(primed.fence(name).view() == (full if primed.primed_by == "snapshot" else retained) for name in NAMES)
            return primed.primed_by

        # Older than the log's head: the records between it and the head aged out unread.
        assert await first_start_with(msgspec.structs.replace(leaders, last_seq=5)) == "context"
        # A forged one: a scheduler term at an epoch no lease copy the log holds names (the renewals name the real one).
        view, forged = leaders.fence.view, leaders.fence.view.newest["scheduler"] + 7
        made_up = _with_view(leaders, newest={**view.newest, "scheduler": forged}, role_of={**view.role_of, forged: "scheduler"},
                             trusted={**view.trusted, "scheduler": forged}, newest_known=forged)
        assert await first_start_with(made_up) == "context"
        # Folded believing other candidates than this worker's.
        assert await first_start_with(_with_view(leaders, candidates=("c-1",))) == "context"
        # The leaders' own, once more at that position: taken.
        assert await first_start_with(leaders) == "snapshot"
