"""`rr doctor`'s shell: measure this node (packages, disk, GPU) and its NATS (reachability, JetStream,
streams, durability, clock, permissions). Every probe catches its own failure and records it,
so one broken thing never hides the others.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import msgspec

from cli.doctor.deps import OPTIONAL, REQUIRED, WORKLOAD, package_status
from cli.doctor.findings import (
    ConfigProbe,
    ConnectionProbe,
    CredentialsProbe,
    DataDirLockProbe,
    DiskProbe,
    GpuProbe,
    HistoryProbe,
    LeaderProbe,
    LeadershipProbe,
    MonitorProbe,
    PackageProbe,
    PermissionsProbe,
    Probes,
)
from cli.up.lock import LOCK_NAME, fd_holders, held_by, pid_alive, read_owner
from eventbus.authority import ROLES, owned_types
from eventbus.connection import Bus, connect, split_servers
from eventbus.errors import BusError
from eventbus.history import Record, last_sequence, replay
from eventbus.leases import LeaseBucket
from eventbus.probe import (
    PermissionWatch,
    PublishProbe,
    StreamProbe,
    parse_server_time,
    probe_jetstream,
    probe_publish,
    probe_stream,
    probe_subscribe,
    server_version,
)
from eventbus.streams import EVENTS_STREAM, StreamSettings, declared_streams
from eventbus.subjects import EVENTS_ROOT, event_subject
from servicekit.auth.credentials import NatsCredentials, connect_options

MONITOR_PORT = 8222
PROBE_STREAM = "RR_DOCTOR_PROBE"  # no such stream: deleting it is harmless even where it is allowed
PROBE_TIMEOUT_S = 3.0
LEADER_ELECTED_FILTER = f"{EVENTS_ROOT}.leader.*.LEADER_ELECTED.*"


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """What to probe: where NATS is, who this node is, and what the config expects."""

    nats_url: str
    node_id: str
    config: ConfigProbe = ConfigProbe()
    credentials: NatsCredentials | None = None
    credentials_path: str = ""
    credentials_error: str = ""
    monitor_url: str | None = None  # None: derived from the first NATS URL; "" : skip
    expected_replicas: int = 1
    leases_bucket: str = "rr_leases"
    data_dir: str = "."
    min_free_gib: float = 10.0
    expected_gpu: str = ""
    max_skew_s: float = 1.0
    embedded: bool = False  # nats_url is this node's rr up's embedded server
    history_events: int = 1000  # the newest events read by the history probe
    history_limit_s: float = 10.0  # a read of them that takes longer has stalled
    election_window_s: float = 600.0
    max_elections: int = 6


async def gather(target: Target) -> Probes:
    """Run every probe; never raises for what it finds."""
    packages = await asyncio.to_thread(probe_packages)
    importable = {p.module for p in packages if p.importable}
    probes = Probes(
        node_id=target.node_id, python=tuple(sys.version_info[:3]), packages=packages,  # type: ignore[arg-type]
        config=target.config,
        credentials=_credentials_probe(target), expected_replicas=target.expected_replicas, leases_bucket=target.leases_bucket,
        min_free_gib=target.min_free_gib, max_skew_s=target.max_skew_s,
        disk=await asyncio.to_thread(probe_disk, Path(target.data_dir)),
        gpu=await probe_gpu(target.expected_gpu, "torch" in importable),
        data_lock=await asyncio.to_thread(probe_data_lock, Path(target.data_dir)),
        max_elections=target.max_elections, embedded=target.embedded,
    )
    if target.credentials_error:
        return probes  # connecting with other credentials than the node's would say nothing useful
    return await _with_nats(probes, target)


def probe_packages() -> list[PackageProbe]:
    """Import each required and optional package (blocking: torch takes seconds)."""
    probes = []
    for modules, required in ((REQUIRED, True), (WORKLOAD, True), (OPTIONAL, False)):
        for module in modules:
            status = package_status(module)
            probes.append(PackageProbe(module=module, distribution=status.distribution, required=required,
                                       importable=status.importable, version=status.version, error=status.error))
    return probes


def _credentials_probe(target: Target) -> CredentialsProbe:
    creds = target.credentials
    return CredentialsProbe(path=target.credentials_path, error=target.credentials_error,
                            user=creds.user if creds else "", role=creds.role if creds else "")


def probe_disk(path: Path) -> DiskProbe:
    """Free space on the file system that holds `path` (or its nearest existing parent)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        usage = shutil.disk_usage(existing)
    except OSError as exc:
        return DiskProbe(path=str(path), error=exc.strerror or str(exc))
    return DiskProbe(path=str(path), free_bytes=usage.free, total_bytes=usage.total)


def probe_data_lock(data_dir: Path) -> DataDirLockProbe:
    """Who holds <data_dir>/rr.lock and, for running holders, what their lock files say (blocking)."""
    path = data_dir / LOCK_NAME
    pids = held_by(path)
    alive = [pid for pid in pids if pid_alive(pid)]
    owners = []
    for lock_file in sorted(data_dir.glob("rr*.lock")) if alive else []:
        owner = read_owner(lock_file)
        if owner is not None and owner.pid in alive and held_by(lock_file):
            owners.append(f"{owner.owner} pid {owner.pid}")
    keepers = [] if alive or not pids else [f"{name} pid {pid}" for pid, name in sorted(fd_holders(path).items())]
    return DataDirLockProbe(path=str(path), pids=pids, alive=alive, owners=owners, keepers=keepers)


async def probe_history(bus: Bus, wanted: int, limit_s: float) -> HistoryProbe:
    """Read the newest `wanted` events of RR_EVENTS, as a starting service does; a stall is recorded, not raised."""
    started, read = time.monotonic(), 0

    def count(_record: Record) -> None:
        nonlocal read
        read += 1

    error = ""
    try:
        async with asyncio.timeout(limit_s):
            last = await last_sequence(bus)
            await replay(bus, count, start_seq=max(1, last - wanted + 1), end_seq=last, idle_timeout=limit_s)
    except TimeoutError:
        error = f"not complete within {limit_s:g}s"
    except BusError as exc:
        error = str(exc)
    return HistoryProbe(wanted=wanted, limit_s=limit_s, read=read, seconds=time.monotonic() - started, error=error)


async def probe_leadership(bus: Bus, window_s: float, limit_s: float) -> LeadershipProbe:
    """LEADER_ELECTED per role (the subject's aggregate id) in the last `window_s` seconds."""
    elections: collections.Counter[str] = collections.Counter()
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=window_s)
    try:
        async with asyncio.timeout(limit_s):
            await replay(bus, lambda r: elections.update([r.subject.split(".")[3]]), subject=LEADER_ELECTED_FILTER,
                         start_time=since, idle_timeout=limit_s)
    except TimeoutError:
        return LeadershipProbe(window_s=window_s, elections=dict(elections), error=f"not complete within {limit_s:g}s")
    except BusError as exc:
        return LeadershipProbe(window_s=window_s, elections=dict(elections), error=str(exc))
    return LeadershipProbe(window_s=window_s, elections=dict(elections))


async def probe_gpu(expected: str, torch_importable: bool) -> GpuProbe:
    """CUDA devices through torch, and nvidia-smi's driver line; absence is recorded, not raised."""
    cuda, devices = (await asyncio.to_thread(_torch_devices)) if torch_importable else (None, [])
    return GpuProbe(torch_cuda=cuda, devices=devices, nvidia_smi=await _nvidia_smi(), expected=expected)


def _torch_devices() -> tuple[bool, list[str]]:
    import torch  # imported here: it takes seconds and is optional on coordinators

    if not torch.cuda.is_available():
        return False, []
    return True, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


async def _nvidia_smi() -> str:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return ""
    try:
        proc = await asyncio.create_subprocess_exec(
            binary, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
    except (TimeoutError, OSError) as exc:
        return f"nvidia-smi failed: {exc}"
    text = out.decode(errors="replace").strip()
    return f"nvidia-smi: {'; '.join(text.splitlines())}" if proc.returncode == 0 else f"nvidia-smi failed: {text[:200]}"


def monitor_url_for(nats_url: str) -> str:
    """http://<host of the first NATS URL>:8222, where the servers' configs put monitoring."""
    host = urllib.parse.urlsplit(split_servers(nats_url)[0]).hostname or "127.0.0.1"
    return f"http://{host}:{MONITOR_PORT}"


def probe_monitor(url: str, timeout: float = PROBE_TIMEOUT_S) -> MonitorProbe:
    """The server's /varz: sync_interval and its clock (blocking)."""
    sent_at = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/varz", timeout=timeout) as response:
            varz = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return MonitorProbe(url=url, reachable=False, error=str(getattr(exc, "reason", exc)))
    round_trip = time.monotonic() - started
    config = (varz.get("jetstream") or {}).get("config") or {}
    interval = config.get("sync_interval")
    return MonitorProbe(
        url=url, reachable=True, sync_always=bool(config.get("sync_always", False)),
        sync_interval_s=interval / 1e9 if isinstance(interval, (int, float)) else None,
        server_now=parse_server_time(varz.get("now")), sent_at=sent_at, round_trip_s=round_trip,
    )


async def _with_nats(probes: Probes, target: Target) -> Probes:
    monitor_url = monitor_url_for(target.nats_url) if target.monitor_url is None else target.monitor_url
    monitor = await asyncio.to_thread(probe_monitor, monitor_url) if monitor_url else None
    watch = PermissionWatch()
    try:
        bus = await connect(target.nats_url, node_id=target.node_id, name=f"rr-doctor:{target.node_id}",
                            connect_timeout=PROBE_TIMEOUT_S, initial_attempts=1, error_listener=watch.on_error,
                            **connect_options(target.credentials))
    except BusError as exc:
        failed = ConnectionProbe(url=target.nats_url, connected=False, error=str(exc))
        return msgspec.structs.replace(probes, connection=failed, monitor=monitor)
    try:
        return await _probe_bus(bus, watch, probes, target, monitor)
    finally:
        await bus.close()


async def _probe_bus(bus: Bus, watch: PermissionWatch, probes: Probes, target: Target, monitor: MonitorProbe | None) -> Probes:
    connection = ConnectionProbe(url=bus.connected_url, connected=True, server_version=server_version(bus))
    jetstream = await probe_jetstream(bus, timeout=PROBE_TIMEOUT_S)
    streams: list[StreamProbe] = []
    if jetstream.enabled:
        for spec in declared_streams(StreamSettings(replicas=target.expected_replicas)):
            try:
                streams.append(await probe_stream(bus, spec.name, timeout=PROBE_TIMEOUT_S))
            except BusError as exc:
                jetstream = msgspec.structs.replace(jetstream, enabled=False, detail=str(exc))
                break
    history = leadership = None
    if any(s.name == EVENTS_STREAM and s.exists for s in streams):
        history = await probe_history(bus, target.history_events, target.history_limit_s)
        if not history.error:  # a stalled log would only stall this read too
            leadership = await probe_leadership(bus, target.election_window_s, target.history_limit_s)
    permissions = await probe_permissions(bus, watch, target) if target.credentials is not None else None
    leader = await probe_leader(bus, target.leases_bucket) if jetstream.enabled else None
    return msgspec.structs.replace(probes, connection=connection, jetstream=jetstream, streams=streams,
                                   monitor=monitor, permissions=permissions, history=history, leadership=leadership,
                                   leader=leader)


async def probe_leader(bus: Bus, bucket_name: str) -> LeaderProbe:
    """The scheduler's lease: its holder and the loops' health its renewals carry."""
    bucket = LeaseBucket(bus, bucket_name)
    try:
        record = await bucket.read("scheduler", timeout=PROBE_TIMEOUT_S) if await bucket.exists() else None
    except BusError as exc:
        return LeaderProbe(error=str(exc))
    if record is None or record.holder is None:
        return LeaderProbe()
    return LeaderProbe(node=record.holder.node, epoch=record.epoch, loops=dict(record.holder.loops))


async def probe_permissions(bus: Bus, watch: PermissionWatch, target: Target) -> PermissionsProbe:
    """A harmless publish of an event type this node's role owns, and harmless attempts at what its role forbids."""
    assert target.credentials is not None
    role = target.credentials.role or "worker"
    owned = owned_types(role) if role in ROLES else ()
    probe_type = owned[0] if owned else "WORK_STARTED"
    own = await probe_publish(bus, watch, event_subject("doctor", "probe", probe_type, target.node_id),
                              timeout=PROBE_TIMEOUT_S)
    if role == "admin":
        return PermissionsProbe(role=role, own_publish=own)
    forbidden: list[PublishProbe] = [
        await probe_publish(bus, watch, f"$JS.API.STREAM.DELETE.{PROBE_STREAM}", b"", harmless=False, timeout=PROBE_TIMEOUT_S)]
    if role == "worker":
        for subject in (f"$KV.{target.leases_bucket}.rr-doctor-probe",
                        event_subject("doctor", "probe", probe_type, "rr-doctor-other-node"),
                        event_subject("doctor", "probe", "MODEL_PROMOTED", target.node_id)):  # a leader's decision
            forbidden.append(await probe_publish(bus, watch, subject, timeout=PROBE_TIMEOUT_S))
    shared = await probe_subscribe(bus, watch, "_INBOX.>", timeout=PROBE_TIMEOUT_S)
    return PermissionsProbe(role=role, own_publish=own, forbidden=forbidden, shared_inbox_subscribe=shared)
