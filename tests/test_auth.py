"""Per-node NATS users on a real nats-server with the generated authorization block.

A worker publishes its own events and heartbeat, consumes through its own durable and reads
the log; it cannot write the leadership KV, publish as another node, delete or purge
streams, take another node's consumer, or read another node's inbox. Every refusal is
checked on the server's side too: nothing was stored, the stream still holds its messages.
Every user logs in with its own node key; a revoked one is cut off at the servers' reload.
"""

from __future__ import annotations

import asyncio
import json
import re
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from cli.auth.generate import generate
from config.sections.leadership import LeadershipSettings
from config.settings import RrConfig
from eventbus import directreads, micro
from eventbus.connection import Bus, connect
from eventbus.consumer import ConsumerSpec, Delivery, EventConsumer
from eventbus.errors import BusUnavailable, InvalidConfig
from eventbus.events import WorkAdded, WorkFailed, WorkProgress, WorkStarted, utcnow
from eventbus.heartbeats import Heartbeat, latest_heartbeats, publish_heartbeat
from eventbus.history import replay
from eventbus.leases import LeaseBucket, LeaseValue
from eventbus.natsserver import NatsServer, ServerSpec, free_port
from eventbus.objects import BucketSpec, ensure_bucket, fetch_to_file, put_file
from eventbus.probe import PermissionWatch, probe_publish, probe_subscribe
from eventbus.publisher import Publisher
from eventbus.sourcestall import step_down_subject
from eventbus.streams import EVENTS_STREAM, StreamSettings, provision
from eventbus.subjects import WORKREFS_BUCKET, source_filter
from projections.workrefs import RefsMap, WorkRefs, subjects_naming
from servicekit.auth.credentials import connect_options, load_credentials
from servicekit.auth.keys import new_seed
from servicekit.workrefentries import EntryWriter, lookup
from services.worker.service import assignments_spec, cancels_spec
from tests.auth_harness import HOSTS, Fleet, auth_server, node_services, open_as, stored_count, violations
from tests.terms import as_term


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Credentials generated from HOSTS, and a JetStream server enforcing them."""
    with auth_server(tmp_path) as (fleet, _server):
        yield fleet


@pytest.fixture
async def admin(fleet: Fleet) -> AsyncIterator[Bus]:
    """The operators' connection, with the streams and the leases bucket provisioned."""
    bus = await open_as(fleet, "admin")
    await provision(bus.js, StreamSettings())
    await LeaseBucket(bus).ensure()
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture
async def worker(fleet: Fleet, admin: Bus) -> AsyncIterator[tuple[Bus, PermissionWatch]]:
    """gpu-1's connection with its own credentials, and the permission violations it is told about."""
    watch = PermissionWatch()
    bus = await open_as(fleet, "gpu-1", watch=watch)
    try:
        yield bus, watch
    finally:
        await bus.close()


def lease_of(node: str) -> LeaseValue:
    return LeaseValue(node=node, incarnation="i-1", ttl_s=3, acquired_at=utcnow())


def test_every_enabled_host_gets_a_user_in_its_role_and_a_private_credentials_file(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    result = generate(hosts, tmp_path / "auth")
    assert result.roles == {"admin": "admin", "coord-1": "coordinator", "gpu-1": "worker", "gpu-2": "worker"}
    for path in [*result.credentials.values(), result.auth_conf]:
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600, path
    creds = load_credentials(result.credentials["gpu-1"])
    assert (creds.user, creds.inbox_prefix, creds.role) == ("gpu-1", "_INBOX_gpu-1", "worker")
    assert "old-3" not in Path(result.auth_conf).read_text()


def test_regenerating_keeps_keys_rotates_what_is_asked_and_revokes_removed_hosts(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    first = generate(hosts, tmp_path / "auth")
    before = {u: load_credentials(p).nkey_seed for u, p in first.credentials.items()}
    hosts.write_text(HOSTS.replace("gpu-2: {status: ready", "gpu-2: {status: disabled"))
    second = generate(hosts, tmp_path / "auth", rotate=["gpu-1"])
    after = {u: load_credentials(p).nkey_seed for u, p in second.credentials.items()}
    assert second.revoked == ["gpu-2"] and not (tmp_path / "auth" / "credentials" / "gpu-2.yaml").exists()
    assert after["gpu-1"] != before["gpu-1"]
    assert after["admin"] == before["admin"] and after["coord-1"] == before["coord-1"]
    assert sorted(second.kept) == ["admin", "coord-1"] and second.new == ["gpu-1"]
    third = generate(hosts, tmp_path / "auth", rotate_all=True)
    assert all(load_credentials(p).nkey_seed != after[u] for u, p in third.credentials.items())
    assert second.public_keys["gpu-1"] not in Path(third.auth_conf).read_text()


def test_a_fleet_without_voters_is_refused_because_workers_could_not_lead(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  gpu-1: {role: selfplay}\n")
    with pytest.raises(InvalidConfig, match=r"hosts.yaml: p2p_voters: empty.*leases KV"):
        generate(hosts, tmp_path / "auth")


def test_leadership_candidates_in_the_config_decide_who_is_a_coordinator(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    config = RrConfig(leadership=LeadershipSettings(candidates=("gpu-2",)))
    result = generate(hosts, tmp_path / "auth", config=config)
    assert result.roles["gpu-2"] == "coordinator" and result.roles["gpu-1"] == "worker"


async def test_connections_without_or_with_wrong_credentials_are_refused_with_the_reason(fleet: Fleet) -> None:
    with pytest.raises(BusUnavailable, match="refused the connection: authorization violation .no credentials were given"):
        await connect(fleet.url, node_id="gpu-1")
    wrong = msgspec.structs.replace(fleet.creds("gpu-1"), nkey_seed=new_seed())  # a key the servers do not know
    with pytest.raises(BusUnavailable, match="authorization violation .the credentials of user 'gpu-1' were rejected.*RR_NATS_CREDS"):
        await connect(fleet.url, node_id="gpu-1", **connect_options(wrong))


async def test_a_worker_publishes_its_own_events_and_heartbeats(
        worker: tuple[Bus, PermissionWatch], admin: Bus, eventually) -> None:
    bus, watch = worker
    published = await Publisher(bus).publish(WorkStarted(work_id="w-1", node="gpu-1", attempt=1, pid=42))
    assert published.seq > 0 and not published.duplicate
    await publish_heartbeat(bus, Heartbeat(node="gpu-1", ts=published.event.ts, seq=1, interval_s=5.0), flush_timeout=2)

    async def beating_nodes() -> list[str]:
        return [b.beat.node for b in await latest_heartbeats(admin, idle_timeout=2)]

    assert await eventually(beating_nodes, timeout=10, message="gpu-1's beat is stored") == ["gpu-1"]
    assert await stored_count(admin, source_filter("gpu-1")) == 1
    assert watch.violations == []


async def test_a_worker_consumes_through_its_own_durable_and_reads_the_log(
        worker: tuple[Bus, PermissionWatch], admin: Bus, eventually) -> None:
    bus, watch = worker
    await Publisher(admin).publish(WorkAdded(work_id="w-9", work_type="selfplay", board_type="square8", num_players=2))
    seen: list[str] = []

    async def on_added(event: WorkAdded, delivery: Delivery) -> None:
        seen.append(event.work_id)

    consumer = EventConsumer(bus, ConsumerSpec(durable="worker-gpu-1", ack_wait_s=5, pull_expires_s=1.0), {WorkAdded: on_added})
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(consumer.run())
        await eventually(lambda: seen == ["w-9"], timeout=10, message="the worker's durable delivered the event")
        await consumer.stop()
    info = await admin.js.consumer_info(EVENTS_STREAM, "worker-gpu-1")
    assert info.num_ack_pending == 0 and info.delivered.stream_seq == 1  # acked: the ack subject is permitted
    records: list[str] = []
    assert await replay(bus, lambda r: records.append(r.subject)) == 1  # ordered reads work too
    assert watch.violations == []


async def test_a_worker_creates_each_of_its_services_durables_and_not_another_nodes(
        worker: tuple[Bus, PermissionWatch], admin: Bus) -> None:
    bus, watch = worker
    for spec in (assignments_spec("gpu-1"), cancels_spec("gpu-1")):
        await EventConsumer(bus, spec, {}).ensure()
    assert watch.violations == []
    other = cancels_spec("gpu-2").durable
    assert (await probe_publish(bus, watch, f"$JS.API.CONSUMER.CREATE.RR_EVENTS.{other}", b"{}", harmless=False)).outcome == "denied"
    assert {info.name for info in await admin.js.consumers_info(EVENTS_STREAM)} == {"worker-gpu-1", "worker_cancels-gpu-1"}


async def test_a_worker_cannot_write_the_leadership_kv(worker: tuple[Bus, PermissionWatch], admin: Bus) -> None:
    bus, watch = worker
    probe = await probe_publish(bus, watch, "$KV.rr_leases.scheduler", b"gpu-1", harmless=False)
    assert probe.outcome == "denied"
    with pytest.raises(BusUnavailable):
        await LeaseBucket(bus).acquire("scheduler", lease_of("gpu-1"), expect_revision=0, timeout=0.5)
    assert (await LeaseBucket(admin).read("scheduler")).state == "absent"
    assert (await admin.js.stream_info("KV_rr_leases")).state.messages == 0


async def test_a_coordinator_can_take_the_leadership_lease(fleet: Fleet, admin: Bus) -> None:
    bus = await open_as(fleet, "coord-1")
    try:
        revision = await LeaseBucket(bus).acquire("scheduler", lease_of("coord-1"), expect_revision=0, timeout=2)
    finally:
        await bus.close()
    assert (await LeaseBucket(admin).read("scheduler")).revision == revision


async def test_a_coordinator_writes_the_work_ref_entries_and_a_worker_only_reads_them(
        fleet: Fleet, worker: tuple[Bus, PermissionWatch]) -> None:
    coordinator = await open_as(fleet, "coord-1")
    try:
        await EntryWriter(coordinator).write(WorkRefs(last_seq=7, refs=RefsMap.of({"w-1": ("rr.evt.data.b-1.>",)})))
    finally:
        await coordinator.close()
    bus, watch = worker
    found = await lookup(bus, "w-1")  # direct gets: a worker's `rr timeline` reads the entries
    assert found is not None and found.last_seq == 7 and subjects_naming(found, "w-1") == ("rr.evt.data.b-1.>",)
    # ... and an item's own records, by batched direct gets answered to its own inbox
    assert await directreads.read_aggregate(bus, "rr.evt.work.w-1.>", 1, 100) == []
    probe = await probe_publish(bus, watch, f"$KV.{WORKREFS_BUCKET}.w-1", b"forged", harmless=False)
    assert probe.outcome == "denied"
    assert watch.violations == [] or all(WORKREFS_BUCKET in v for v in watch.violations)


async def test_a_worker_cannot_publish_another_nodes_events(fleet: Fleet, admin: Bus) -> None:
    watch = PermissionWatch()
    impostor = await open_as(fleet, "gpu-1", node_id="gpu-2", watch=watch)  # gpu-1's key, gpu-2's subjects
    try:
        with pytest.raises(BusUnavailable):
            await Publisher(impostor, ack_timeout=0.5, retry_for=0.5).publish(
                WorkStarted(work_id="w-1", node="gpu-2", attempt=1, pid=1))
    finally:
        await impostor.close()
    assert any("rr.evt.work.w-1.work_started.gpu-2" in v for v in watch.violations)
    assert await stored_count(admin, source_filter("gpu-2")) == 0


async def test_a_worker_cannot_delete_or_purge_streams(worker: tuple[Bus, PermissionWatch], admin: Bus) -> None:
    bus, watch = worker
    await Publisher(admin).publish(WorkAdded(work_id="w-1", work_type="selfplay", board_type="square8", num_players=2))
    for api in ("$JS.API.STREAM.DELETE.RR_EVENTS", "$JS.API.STREAM.PURGE.RR_EVENTS", "$JS.API.STREAM.PURGE.KV_rr_leases",
                "$JS.API.STREAM.DELETE.KV_rr_leases"):
        assert (await probe_publish(bus, watch, api, b"", harmless=False)).outcome == "denied", api
    info = await admin.js.stream_info(EVENTS_STREAM)
    assert info.state.messages == 1
    assert (await admin.js.stream_info("KV_rr_leases")).config.name == "KV_rr_leases"


async def test_a_coordinator_may_ask_the_logs_leader_to_step_down_and_a_worker_may_not(
    fleet: Fleet, worker: tuple[Bus, PermissionWatch]
) -> None:
    # A lease holder whose acquisition's copy is held up by a stalled source asks for it (cluster/leadership/sourcenudge.py).
    subject = step_down_subject(EVENTS_STREAM)
    bus, watch = worker
    assert (await probe_publish(bus, watch, subject, b"", harmless=False)).outcome == "denied"
    coordinator_watch = PermissionWatch()
    coordinator = await open_as(fleet, "coord-1", watch=coordinator_watch)
    try:
        probe = await probe_publish(coordinator, coordinator_watch, subject, b"", harmless=False)
    finally:
        await coordinator.close()
    assert probe.outcome == "rejected", probe  # the server's answer: a single server has no other replica to lead


async def test_a_worker_cannot_take_another_nodes_durable_consumer(worker: tuple[Bus, PermissionWatch], admin: Bus) -> None:
    bus, watch = worker
    for api in ("$JS.API.CONSUMER.DURABLE.CREATE.RR_EVENTS.worker-gpu-2", "$JS.API.CONSUMER.MSG.NEXT.RR_EVENTS.worker-gpu-2",
                "$JS.API.CONSUMER.CREATE.RR_EVENTS.worker-gpu-2"):
        assert (await probe_publish(bus, watch, api, b"{}", harmless=False)).outcome == "denied", api
    # A durable name on the ephemeral-create subject (which workers may use) is refused by the server.
    reply = await bus.nc.request(
        "$JS.API.CONSUMER.CREATE.RR_EVENTS", msgspec.json.encode({"stream_name": EVENTS_STREAM, "config": {
            "durable_name": "worker-gpu-2", "ack_policy": "explicit"}}), timeout=2)
    assert b"error" in reply.data
    assert (await admin.js.stream_info(EVENTS_STREAM)).state.consumer_count == 0


async def test_a_worker_reads_only_its_own_inbox(worker: tuple[Bus, PermissionWatch]) -> None:
    bus, watch = worker
    assert await probe_subscribe(bus, watch, "_INBOX_gpu-1.probe")
    assert not await probe_subscribe(bus, watch, "_INBOX.>")
    assert not await probe_subscribe(bus, watch, "_INBOX_gpu-2.>")
    assert not await probe_subscribe(bus, watch, "rr.evt.>")  # live events come through its consumers only


async def test_a_workers_ephemeral_consumer_cannot_deliver_into_the_leases_kv(
        worker: tuple[Bus, PermissionWatch], admin: Bus) -> None:
    bus, _watch = worker
    await Publisher(bus).publish(WorkStarted(work_id="w-1", node="gpu-1", attempt=1, pid=1))
    # Workers may create ephemeral consumers (ordered reads) and the server does not check
    # their deliver subject against the creator's permissions; it must still store nothing.
    reply = await bus.nc.request("$JS.API.CONSUMER.CREATE.RR_EVENTS", msgspec.json.encode({
        "stream_name": EVENTS_STREAM, "config": {"deliver_subject": "$KV.rr_leases.scheduler", "ack_policy": "none"}}),
        timeout=2)
    assert b"consumer_create_response" in reply.data
    await Publisher(bus).publish(WorkStarted(work_id="w-2", node="gpu-1", attempt=1, pid=1))
    await admin.nc.flush(timeout=2)
    assert (await admin.js.stream_info("KV_rr_leases")).state.messages == 0


async def test_a_worker_uploads_replaces_and_downloads_objects(worker: tuple[Bus, PermissionWatch], admin: Bus,
                                                               tmp_path: Path) -> None:
    bus, watch = worker
    await ensure_bucket(admin, BucketSpec(name="rr_data"))
    source = tmp_path / "batch.bin"
    source.write_bytes(b"x" * 3000)
    await put_file(bus, "rr_data", "b-1", source)
    source.write_bytes(b"y" * 2000)
    stored = await put_file(bus, "rr_data", "b-1", source)  # a new version purges the old chunks
    fetched = await fetch_to_file(bus, "rr_data", "b-1", tmp_path / "copy.bin", expect_sha256=stored.sha256)
    assert Path(fetched.path).read_bytes() == b"y" * 2000
    assert watch.violations == []


NODE_SERVICES = ("agent", "worker", "distributor", "sync")


async def test_a_workers_services_run_on_its_credentials_without_one_permission_violation(
        tmp_path: Path, eventually) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    generate(hosts, tmp_path / "auth")
    config = tmp_path / "rr.yaml"
    # No GPU probe: torch's import (seconds of CPU per agent) delays the first beat and touches no permission.
    config.write_text(f"hosts_file: {hosts}\nmembership: {{gpu_probe: none}}\n")
    spec = ServerSpec(name="rr-auth", port=free_port(), store_dir=str(tmp_path / "nats" / "jetstream"),
                      extra_config=(tmp_path / "auth" / "auth.conf").read_text())
    with NatsServer(spec) as server:
        fleet = Fleet(url=server.url, out=tmp_path / "auth")
        admin = await open_as(fleet, "admin")
        await provision(admin.js, StreamSettings())
        async with node_services("gpu-1", NODE_SERVICES, server.url, fleet.out, config, tmp_path):
            async def settled() -> bool:
                names = {b.beat.node for b in await latest_heartbeats(admin, idle_timeout=2)}
                streams = {i.config.name for i in await admin.js.streams_info()}
                consumers = (await admin.js.stream_info(EVENTS_STREAM)).state.consumer_count
                return names == {"gpu-1"} and {"OBJ_rr_models", "OBJ_rr_data"} <= streams and consumers >= 1
            try:
                await eventually(settled, timeout=80, message="gpu-1's services beat, consumed and made their buckets")
            finally:
                await admin.close()
        assert violations(server) == []


async def test_a_workers_services_answer_discovery_and_status_from_admin_and_coordinators(
        worker: tuple[Bus, PermissionWatch], fleet: Fleet, admin: Bus) -> None:
    bus, watch = worker

    async def status() -> bytes:
        return b'{"state":"running"}'

    registration = await micro.register(bus, name="rr-agent", version="0.1.0", description="agent on gpu-1",
                                        metadata={"node": "gpu-1"}, status_subject="rr.svc.agent.gpu-1.status", status=status)
    coordinator = await open_as(fleet, "coord-1")
    try:
        for asker in (admin, coordinator):
            found = await micro.discover(asker, name="rr-agent", timeout=3, quiet=0.3)
            assert [s.metadata for s in found] == [{"node": "gpu-1"}]
            assert await micro.request(asker, "rr.svc.agent.gpu-1.status", timeout=3) == b'{"state":"running"}'
    finally:
        await coordinator.close()
        await registration.stop()
    assert watch.violations == []


def test_rr_auth_gen_lists_each_user_with_its_role_and_the_server_config_holds_only_public_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main as rr

    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    assert rr(["auth", "gen", "--hosts", str(hosts), "--out", str(tmp_path / "auth")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^gpu-1\s+worker\s+new key\s+U\S{11}\.\.\.\s+\S+gpu-1.yaml$", out, re.MULTILINE), out
    assert re.search(r"^coord-1\s+coordinator\s+new key", out, re.MULTILINE), out
    server_conf = (tmp_path / "auth" / "auth.conf").read_text()
    seeds = [load_credentials(p).nkey_seed for p in (tmp_path / "auth" / "credentials").glob("*.yaml")]
    assert len(seeds) == 4 and all(seed.startswith("SU") and seed not in server_conf for seed in seeds)
    assert "password" not in server_conf and server_conf.count('nkey: "U') == 4
    assert rr(["auth", "gen", "--hosts", str(hosts), "--out", str(tmp_path / "auth"), "--rotate", "gpu-1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["new"] == ["gpu-1"] and "admin" in result["kept"]
    assert rr(["auth", "gen", "--hosts", str(hosts), "--out", str(tmp_path / "auth"), "--rotate", "gpu-9"]) == 1
    assert "--rotate: gpu-9 not an enabled host" in capsys.readouterr().err


def test_a_password_file_from_before_node_keys_is_refused_with_the_fix(tmp_path: Path) -> None:
    old = tmp_path / "gpu-1.yaml"
    old.write_text('user: "gpu-1"\npassword: "hunter2"\ninbox_prefix: "_INBOX_gpu-1"\nrole: "worker"\n')
    with pytest.raises(InvalidConfig, match=r"gpu-1.yaml: nkey_seed: missing \(a password file from before node keys\).*rr auth gen"):
        load_credentials(old)
    old.write_text('user: "gpu-1"\nnkey_seed: "SUNOTASEED"\n')
    with pytest.raises(InvalidConfig, match=r"gpu-1.yaml: nkey_seed: not an NKey seed"):
        load_credentials(old)


def test_a_service_refuses_another_nodes_credentials(fleet: Fleet) -> None:
    from servicekit.auth.credentials import check_identity

    with pytest.raises(InvalidConfig, match=r"credentials of user 'gpu-1' used by node 'gpu-2'.*credentials/gpu-2.yaml"):
        check_identity(fleet.creds("gpu-1"), "gpu-2")
    check_identity(fleet.creds("gpu-1"), "gpu-1")
    check_identity(fleet.creds("admin"), "laptop")  # operators' credentials work from any machine
    check_identity(None, "gpu-2")  # no authentication configured


# nats-py's reconnect, refused by the server, leaves its socket to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_revoked_node_is_cut_off_after_a_reload_while_the_others_go_on(tmp_path: Path, eventually) -> None:
    with auth_server(tmp_path) as (fleet, server):
        admin = await open_as(fleet, "admin")
        await provision(admin.js, StreamSettings())
        buses = {user: await open_as(fleet, user) for user in ("gpu-1", "gpu-2", "coord-1")}
        revoked_creds = fleet.creds("gpu-2")
        try:
            for node in ("gpu-1", "gpu-2"):
                await Publisher(buses[node]).publish(WorkStarted(work_id=f"w-{node}", node=node, attempt=1))
            (tmp_path / "hosts.yaml").write_text(HOSTS.replace("gpu-2: {status: ready", "gpu-2: {status: disabled"))
            assert generate(tmp_path / "hosts.yaml", fleet.out).revoked == ["gpu-2"]
            reloaded = time.monotonic()
            server.reload(msgspec.structs.replace(server.spec, extra_config=(fleet.out / "auth.conf").read_text()))

            async def gpu2_cut_off() -> bool:
                try:
                    await Publisher(buses["gpu-2"], ack_timeout=0.5, retry_for=0.5).publish(
                        WorkProgress(work_id="w-gpu-2", node="gpu-2", attempt=1))
                except BusUnavailable:
                    return True
                return False

            await eventually(gpu2_cut_off, timeout=10, message="gpu-2's publishes are refused after the reload")
            cut_after = time.monotonic() - reloaded
            assert cut_after < 5, cut_after
            stored_by_gpu2 = await stored_count(admin, source_filter("gpu-2"))  # 2 if a publish beat the reload
            assert await gpu2_cut_off()
            with pytest.raises(BusUnavailable, match="credentials of user 'gpu-2' were rejected"):
                await connect(fleet.url, node_id="gpu-2", initial_attempts=1, **connect_options(revoked_creds))
            # The others keep their connections: no restart, no reconnect.
            await Publisher(buses["gpu-1"]).publish(WorkProgress(work_id="w-gpu-1", node="gpu-1", attempt=1))
            await as_term(Publisher(buses["coord-1"]), WorkFailed(work_id="w-gpu-2", reason="node revoked"))
            assert all(buses[u].nc.stats["reconnects"] == 0 for u in ("gpu-1", "coord-1"))
            assert await stored_count(admin, source_filter("gpu-2")) == stored_by_gpu2 <= 2
            assert await stored_count(admin, source_filter("gpu-1")) == 2
        finally:
            for bus in buses.values():
                await bus.close()
            await admin.close()
