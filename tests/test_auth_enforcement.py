"""The server enforces who may write what, with the credentials `rr auth gen` generates.

For each role, every event type it does not own is refused (and each it owns is stored);
no node can purge, delete or shorten the log, the dead letters, the leases or the object
stores, and the streams keep every message; objects are cleaned up by the leader with
deletes of named objects only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest

from eventbus.authority import may_publish, owned_types
from eventbus.connection import Bus
from eventbus.contextread import source_seq
from eventbus.events import EVENT_TYPES
from eventbus.leases import LeaseBucket, LeaseValue
from eventbus.objectdelete import delete_object, delete_orphan_chunks
from eventbus.objects import BucketSpec, ensure_bucket, fetch_to_file, put_file, stat_object
from eventbus.probe import PermissionWatch, probe_publish
from eventbus.snapshots import SNAPSHOT_BUCKET, kept_index, kept_name, load_snapshot, save_snapshot
from eventbus.streams import (
    CONTEXT_STREAM,
    CONTEXT_SUBJECTS,
    DEADLETTER_STREAM,
    EVENTS_STREAM,
    TELEMETRY_STREAM,
    StreamSettings,
    provision,
)
from eventbus.subjects import deadletter_subject, source_filter
from projections import cluster
from tests.auth_harness import Fleet, auth_server, node_services, open_as, stored_count, violations
from tests.helpers import eventually

BUCKETS = ("rr_models", "rr_data")
LOG_STREAMS = (EVENTS_STREAM, CONTEXT_STREAM, DEADLETTER_STREAM, TELEMETRY_STREAM, "KV_rr_leases")
ALL_STREAMS = (*LOG_STREAMS, *(f"OBJ_{b}" for b in BUCKETS))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with auth_server(tmp_path) as (fleet, _server):
        yield fleet


@pytest.fixture
async def admin(fleet: Fleet, tmp_path: Path) -> AsyncIterator[Bus]:
    """Admin's connection; the streams, the leases and both buckets hold something."""
    bus = await open_as(fleet, "admin", node_id="laptop")
    await provision(bus.js, StreamSettings())
    leases = LeaseBucket(bus)
    await leases.ensure()
    await leases.acquire("scheduler", LeaseValue(node="coord-1", incarnation="i", ttl_s=60, acquired_at=dt.datetime.now(dt.UTC)),
                         expect_revision=0, timeout=2)
    await bus.js.publish("rr.evt.work.w-0.WORK_ADDED.laptop", b"{}")
    await bus.js.publish(deadletter_subject(EVENTS_STREAM, "worker-gpu-1"), b"{}")
    await bus.js.publish("rr.tel.hb.gpu-1", b"{}")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"m" * 5000)
    for bucket in BUCKETS:
        await ensure_bucket(bus, BucketSpec(name=bucket))
        await put_file(bus, bucket, "keep-me", blob)
    # The log sources the lease bucket: the lease's copy lands in RR_EVENTS on the server's own time, which a loaded
    # machine can put after a test's "before" count. Both of the log's messages are there before any test counts.
    await eventually(lambda: _stored(bus, EVENTS_STREAM, 2), timeout=30, message="the lease's copy sourced into the log")
    await eventually(lambda: _stored(bus, CONTEXT_STREAM, 1), timeout=30, message="the lease's copy sourced into RR_CONTEXT")
    try:
        yield bus
    finally:
        await bus.close()


async def _stored(admin: Bus, stream: str, count: int) -> bool:
    return (await admin.js.stream_info(stream)).state.messages >= count


async def message_counts(admin: Bus) -> dict[str, int]:
    return {s: (await admin.js.stream_info(s)).state.messages for s in ALL_STREAMS}


@pytest.mark.parametrize(("user", "node"), [("gpu-1", "gpu-1"), ("coord-1", "coord-1"), ("admin", "laptop")])
async def test_each_role_may_publish_exactly_the_event_types_it_owns(fleet: Fleet, admin: Bus, user: str, node: str) -> None:
    watch = PermissionWatch()
    bus = await open_as(fleet, user, node_id=node, watch=watch)
    try:
        outcomes = {t: (await probe_publish(bus, watch, f"rr.evt.x.probe.{t}.{node}", harmless=False)).outcome
                    for t in EVENT_TYPES}
    finally:
        await bus.close()
    role = fleet.creds(user).role
    assert {t for t, o in outcomes.items() if o == "stored"} == set(owned_types(role))  # type: ignore[arg-type]
    assert {t for t, o in outcomes.items() if o == "denied"} == {t for t in EVENT_TYPES if not may_publish(role, t)}
    assert await stored_count(admin, source_filter(node)) == len(owned_types(role)) + (user == "admin")  # type: ignore[arg-type]


async def test_a_worker_cannot_forge_a_promotion_nor_an_election(fleet: Fleet, admin: Bus) -> None:
    watch = PermissionWatch()
    bus = await open_as(fleet, "gpu-1", watch=watch)
    try:
        for subject in ("rr.evt.model.evil.MODEL_PROMOTED.gpu-1", "rr.evt.leader.scheduler.LEADER_ELECTED.gpu-1",
                        "rr.evt.model.evil.MODEL_PROMOTED.coord-1"):
            assert (await probe_publish(bus, watch, subject, harmless=False)).outcome == "denied", subject
    finally:
        await bus.close()
    assert await stored_count(admin, "rr.evt.*.*.MODEL_PROMOTED.*") == 0
    assert await stored_count(admin, "rr.evt.leader.>") == 0


@pytest.mark.parametrize(("user", "node"), [("gpu-1", "gpu-1"), ("coord-1", "coord-1"), ("admin", "laptop")])
async def test_no_one_puts_a_record_in_the_context_stream_that_is_not_the_servers_copy_of_the_logs(
        fleet: Fleet, admin: Bus, user: str, node: str) -> None:
    bus = await open_as(fleet, user, node_id=node, watch=PermissionWatch())

    async def attempt(subject: str, headers: dict[str, str] | None) -> None:
        with contextlib.suppress(nats.errors.Error):  # a denied publish is never answered: its wait runs out
            await bus.nc.request(subject, b"{}", timeout=1, headers=headers)

    try:
        # All at once: each denied one waits out its second, and one after another they took 4-8 s a case.
        subjects = (f"rr.evt.leader.scheduler.LEADER_ELECTED.{node}", f"rr.evt.host.{node}.HOST_ONLINE.{node}",
                    "rr.evt.lease.scheduler.LEASE_WRITTEN.nats", "rr.ctx.anything")
        await asyncio.gather(*(attempt(subject, headers)
                               for subject in subjects for headers in (None, {"Nats-Expected-Stream": CONTEXT_STREAM})))
    finally:
        await bus.close()
    # Whatever landed in the log is copied; nothing else is there: each record is the copy of the one its header names.
    copies = sum([await stored_count(admin, subject) for subject in CONTEXT_SUBJECTS])
    await eventually(lambda: _stored(admin, CONTEXT_STREAM, copies), timeout=30, message="RR_CONTEXT copied the log's")
    info = await admin.js.stream_info(CONTEXT_STREAM)
    assert info.state.messages == copies
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        copy = await admin.js.get_msg(CONTEXT_STREAM, seq)
        original = await admin.js.get_msg(EVENTS_STREAM, source_seq(copy.headers) or 0)
        assert (copy.subject, copy.data) == (original.subject, original.data), seq


def destructive_calls(streams: tuple[str, ...]) -> list[tuple[str, bytes]]:
    calls: list[tuple[str, bytes]] = [("$JS.API.ACCOUNT.PURGE.rr", b"")]
    for stream in streams:
        calls += [
            (f"$JS.API.STREAM.PURGE.{stream}", b""),
            (f"$JS.API.STREAM.DELETE.{stream}", b""),
            (f"$JS.API.STREAM.UPDATE.{stream}", json.dumps({"name": stream, "max_msgs": 1}).encode()),
            (f"$JS.API.STREAM.MSG.DELETE.{stream}", b'{"seq": 1}'),
        ]
    return calls


async def assert_all_denied(fleet: Fleet, admin: Bus, user: str, calls: list[tuple[str, bytes]]) -> None:
    before = await message_counts(admin)
    watch = PermissionWatch()
    bus = await open_as(fleet, user, watch=watch)
    try:
        for subject, body in calls:
            assert (await probe_publish(bus, watch, subject, body, harmless=False)).outcome == "denied", (user, subject)
    finally:
        await bus.close()
    assert await message_counts(admin) == before
    assert all(count > 0 for count in before.values()), before


async def test_a_worker_cannot_purge_delete_or_update_any_stream_kv_or_object_store(fleet: Fleet, admin: Bus) -> None:
    await assert_all_denied(fleet, admin, "gpu-1", destructive_calls(ALL_STREAMS))


async def test_a_coordinator_cannot_cut_the_log_the_dead_letters_or_the_leases_nor_purge_objects(
        fleet: Fleet, admin: Bus) -> None:
    calls = destructive_calls(LOG_STREAMS) + [
        (f"$JS.API.STREAM.{verb}.OBJ_{bucket}", b"") for bucket in BUCKETS for verb in ("PURGE", "DELETE")]
    await assert_all_denied(fleet, admin, "coord-1", calls)


@pytest.mark.parametrize("user", ["gpu-1", "coord-1"])
async def test_no_node_can_empty_a_bucket_with_a_rollup(fleet: Fleet, admin: Bus, user: str) -> None:
    before = await message_counts(admin)
    bus = await open_as(fleet, user)
    try:
        for bucket in BUCKETS:
            with pytest.raises(nats.js.errors.APIError, match="rollup"):
                await bus.js.publish(f"$O.{bucket}.M.evil", b"{}", headers={"Nats-Rollup": "all"}, timeout=2)
    finally:
        await bus.close()
    assert await message_counts(admin) == before


async def test_objects_are_replaced_by_nodes_and_cleaned_up_by_a_coordinator_with_named_deletes(
        fleet: Fleet, admin: Bus, tmp_path: Path) -> None:
    source = tmp_path / "batch.bin"
    watch = PermissionWatch()
    worker = await open_as(fleet, "gpu-1", watch=watch)
    coordinator = await open_as(fleet, "coord-1", watch=watch)
    try:
        source.write_bytes(b"x" * 3000)
        first = await put_file(worker, "rr_data", "b-1", source)
        source.write_bytes(b"y" * 2000)
        second = await put_file(worker, "rr_data", "b-1", source)  # the old chunks stay: nodes may not delete
        assert await stored_count(admin, f"$O.rr_data.C.{first.nuid}", "OBJ_rr_data") == 1
        assert await delete_object(worker, "rr_data", "keep-me", chunks=False)  # a node marks a corrupt copy deleted
        assert await delete_orphan_chunks(coordinator, "rr_data", older_than_s=3600) == 0  # too young yet
        assert await delete_orphan_chunks(coordinator, "rr_data", older_than_s=0) == 2
        assert await stored_count(admin, "$O.rr_data.C.>", "OBJ_rr_data") == 1
        fetched = await fetch_to_file(worker, "rr_data", "b-1", tmp_path / "copy.bin", expect_sha256=second.sha256)
        assert Path(fetched.path).read_bytes() == b"y" * 2000
        assert await delete_object(coordinator, "rr_models", "keep-me")  # the leader's retention duty
        assert await stat_object(admin, "rr_models", "keep-me") is None
        assert await stored_count(admin, "$O.rr_models.C.>", "OBJ_rr_models") == 0
    finally:
        await worker.close()
        await coordinator.close()
    assert watch.violations == []


async def test_a_coordinators_leader_loops_run_on_its_credentials_without_one_permission_violation(
        tmp_path: Path, eventually) -> None:
    config = tmp_path / "rr.yaml"
    # No GPU probe: torch's import (seconds of CPU per agent) delays the first beats and touches no permission.
    config.write_text(f"hosts_file: {tmp_path / 'hosts.yaml'}\nmembership: {{gpu_probe: none}}\n")
    decisions = {"LEADER_ELECTED", "HOST_ONLINE", "CONFIG_CHANGED", "WORK_ADDED", "WORK_ASSIGNED"}
    with auth_server(tmp_path) as (fleet, server):
        admin = await open_as(fleet, "admin")
        await provision(admin.js, StreamSettings())

        async def decided() -> bool:
            info = await admin.js.stream_info(EVENTS_STREAM, subjects_filter=source_filter("coord-1"))
            return decisions <= {subject.split(".")[4] for subject in info.state.subjects or {}}

        try:
            async with node_services("coord-1", ("scheduler", "agent"), server.url, fleet.out, config, tmp_path), \
                    node_services("gpu-1", ("agent",), server.url, fleet.out, config, tmp_path):
                await eventually(decided, timeout=60, message="coord-1 leads, sees the nodes online and assigns work")
        finally:
            await admin.close()
        assert violations(server) == []


async def test_a_coordinator_replaces_its_snapshots_without_a_purge_and_leaves_no_old_chunks(fleet: Fleet, admin: Bus) -> None:
    watch = PermissionWatch()
    leader = await open_as(fleet, "coord-1", watch=watch)
    try:
        for size in (3000, 2000, 1000):
            await save_snapshot(leader, "assigner", b"s" * size)
        assert await load_snapshot(leader, "assigner") == b"s" * 1000
        assert await stored_count(admin, f"$O.{SNAPSHOT_BUCKET}.C.>", f"OBJ_{SNAPSHOT_BUCKET}") == 1
        assert await delete_object(leader, SNAPSHOT_BUCKET, "assigner") and await load_snapshot(leader, "assigner") is None
    finally:
        await leader.close()
    assert watch.violations == []


async def test_a_worker_cannot_write_the_cluster_snapshots_a_first_start_seeds_its_fence_from(fleet: Fleet, admin: Bus) -> None:
    name = kept_name(cluster.PROJECTION.name, cluster.PROJECTION.version, 10)
    leader = await open_as(fleet, "coord-1")
    try:
        await save_snapshot(leader, name, b"the leaders' fold")
    finally:
        await leader.close()
    stored = await stored_count(admin, f"$O.{SNAPSHOT_BUCKET}.>", f"OBJ_{SNAPSHOT_BUCKET}")
    watch = PermissionWatch()
    worker = await open_as(fleet, "gpu-1", watch=watch)
    try:
        for subject in (f"$O.{SNAPSHOT_BUCKET}.C.forged", f"$O.{SNAPSHOT_BUCKET}.M.forged",
                        f"$JS.API.STREAM.CREATE.OBJ_{SNAPSHOT_BUCKET}"):
            assert (await probe_publish(worker, watch, subject, harmless=False)).outcome == "denied", subject
        assert (await kept_index(worker))[cluster.PROJECTION.name, cluster.PROJECTION.version] == [10]  # it lists them
        assert await load_snapshot(worker, name) == b"the leaders' fold"  # and reads them
    finally:
        await worker.close()
    assert await stored_count(admin, f"$O.{SNAPSHOT_BUCKET}.>", f"OBJ_{SNAPSHOT_BUCKET}") == stored
