"""`rr doctor`'s verdicts, pure: what the probes found (findings.py) -> one CheckResult per check, each failure with its fix.

The probes (cli/doctor/probes.py) do all the I/O; nothing here touches the machine, so
every verdict and every fix text is tested with plain values.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from cli.doctor.deps import REQUIRED, install_hint
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
from cluster.leadership.status import loops_down
from eventbus.probe import JetStreamProbe, StreamProbe
from eventbus.streams import EVENTS_STREAM

MIN_PYTHON = (3, 11)
GIB = 1 << 30


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the report: passed or not, what was found, and how to fix a failure."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True  # False: a warning or information, never fails the run


def evaluate(p: Probes) -> list[CheckResult]:
    """Every check's verdict, in the order an operator fixes things."""
    results = [check_python(p.python), *check_packages(p.packages), *check_config(p.config, p.node_id)]
    results.append(check_credentials(p.credentials, p.node_id))
    results.append(check_connection(p.connection, p.credentials))
    if p.connection is not None and p.connection.connected:
        results.append(check_jetstream(p.jetstream))
        results += check_streams(p.streams, p.expected_replicas, p.leases_bucket)
        if p.history is not None:
            results.append(check_history(p.history))
        if p.leadership is not None:
            results.append(check_leadership(p.leadership, p.max_elections))
        if not p.embedded:  # rr up's own server keeps the default sync interval on purpose and has no monitor port
            results.append(check_durability(p.monitor))
        results.append(check_clock(p.streams, p.monitor, p.max_skew_s))
        if p.leader is not None:
            results.append(check_leader(p.leader))
        if p.permissions is not None:
            results += check_permissions(p.permissions, p.node_id)
    if p.data_lock is not None:
        results.append(check_data_dir_lock(p.data_lock))
    if p.disk is not None:
        results.append(check_disk(p.disk, p.min_free_gib))
    results.append(check_gpu(p.gpu))
    return results


def passed(results: list[CheckResult]) -> bool:
    """True when every required check passed (the exit status is 0)."""
    return all(r.ok for r in results if r.required)


def check_python(version: tuple[int, int, int]) -> CheckResult:
    """Python 3.11 or newer."""
    text = ".".join(map(str, version))
    if version[:2] >= MIN_PYTHON:
        return CheckResult(name="python", ok=True, detail=text)
    return CheckResult(name="python", ok=False, detail=f"{text} is too old",
                       fix="install Python 3.11 or newer and recreate the venv (python3.11 -m venv /opt/rr/venv)")


def check_packages(packages: list[PackageProbe]) -> list[CheckResult]:
    """Each package importable; a missing optional one (torch) is a warning."""
    results = []
    for pkg in packages:
        name = f"package {pkg.module}"
        if pkg.importable:
            results.append(CheckResult(name=name, ok=True, detail=f"{pkg.distribution} {pkg.version}".strip(), required=pkg.required))
            continue
        why = "needed by every rr service" if pkg.module in REQUIRED else "needed by the workload's jobs (every worker, every rr up)"
        results.append(CheckResult(name=name, ok=False, detail=f"cannot import: {pkg.error} ({why})",
                                   fix=install_hint([pkg.distribution]), required=pkg.required))
    return results


def check_config(config: ConfigProbe, node_id: str) -> list[CheckResult]:
    """The rr config and the hosts file it names load cleanly, and the hosts file lists this node."""
    if config.error:
        return [CheckResult(name="config", ok=False, detail=config.error,
                            fix="correct the key named above (the message gives file, key and problem)")]
    results = [CheckResult(name="config", ok=True, detail=config.path or "no config file (RR_CONFIG unset): defaults")]
    if not config.hosts_path:
        return results
    if config.hosts_error:
        results.append(CheckResult(name="hosts file", ok=False, detail=config.hosts_error,
                                   fix="correct the key named above; config/distributed_hosts.example.yaml shows the schema"))
    elif not config.node_in_hosts:
        results.append(CheckResult(
            name="hosts file", ok=False, required=False, detail=f"{config.hosts_path} does not list {node_id}",
            fix=f"add {node_id} under hosts: (or set RR_NODE_ID to this machine's key there); `rr auth gen` makes no user for it"))
    else:
        results.append(CheckResult(name="hosts file", ok=True, detail=f"{config.hosts_path} lists {node_id}"))
    return results


def check_credentials(creds: CredentialsProbe, node_id: str) -> CheckResult:
    """The credentials file, when configured, loads and belongs to this node."""
    if not creds.path:
        return CheckResult(name="credentials", ok=True, required=False,
                           detail="none configured (RR_NATS_CREDS unset): only right for a server without authorization")
    if creds.error:
        return CheckResult(name="credentials", ok=False, detail=f"{creds.path}: {creds.error}",
                           fix="regenerate with `rr auth gen --hosts ... --out ...` and install this node's file (mode 0600)")
    if creds.role != "admin" and creds.user != node_id:
        return CheckResult(name="credentials", ok=False, detail=f"{creds.path} is user {creds.user!r} but this node is {node_id!r}",
                           fix=f"install credentials/{node_id}.yaml from `rr auth gen`, or set RR_NODE_ID={creds.user}")
    return CheckResult(name="credentials", ok=True, detail=f"{creds.path}: user {creds.user} ({creds.role or 'role unknown'})")


def check_connection(conn: ConnectionProbe | None, creds: CredentialsProbe) -> CheckResult:
    """A NATS server accepted the connection."""
    if conn is None:
        return CheckResult(name="nats reachable", ok=False, detail="not tried: nats-py cannot be imported",
                           fix="install the missing packages above, then run rr doctor again")
    if conn.connected:
        return CheckResult(name="nats reachable", ok=True, detail=f"{conn.url} (nats-server {conn.server_version})")
    if "authorization violation" in conn.error:
        fix = ("set RR_NATS_CREDS to this node's credentials file from `rr auth gen`" if not creds.path else
               f"the server rejected {creds.path}: regenerate (rr auth gen) or reinstall this node's file, and reload the servers")
        return CheckResult(name="nats reachable", ok=False, detail=conn.error, fix=fix)
    return CheckResult(name="nats reachable", ok=False, detail=conn.error,
                       fix="start the NATS servers (systemctl start rr-nats) or point RR_NATS_URL / --nats at them; "
                           "check the firewall for port 4222")


def check_jetstream(js: JetStreamProbe | None) -> CheckResult:
    """JetStream answers for this account."""
    if js is not None and js.enabled:
        return CheckResult(name="jetstream", ok=True, detail=f"enabled: {js.streams} streams, {js.consumers} consumers")
    return CheckResult(name="jetstream", ok=False, detail=js.detail if js else "not probed",
                       fix="enable JetStream in the server config (a `jetstream { store_dir: ... }` block, "
                           "see ops/nats/node-a.conf) and restart it; in a cluster, a majority of servers must be up")


def check_streams(streams: list[StreamProbe], expected_replicas: int, leases_bucket: str = "rr_leases") -> list[CheckResult]:
    """Every declared stream exists with the configured replica count, its replicas are current, and the log
    copies the lease bucket (without the copies, the fences cannot tell a made-up election from a real one)."""
    results = []
    for s in streams:
        name = f"stream {s.name}"
        if not s.exists:
            results.append(CheckResult(name=name, ok=False, detail="missing",
                                       fix="run `rr streams init` with admin credentials (RR_NATS_CREDS=.../admin.yaml)"))
        elif s.replicas != expected_replicas:
            results.append(CheckResult(
                name=name, ok=False, detail=f"{s.replicas} replicas, the config asks for {expected_replicas}",
                fix=f"run `rr streams init --replicas {expected_replicas}` (admin), or set streams.replicas in the rr config"))
        elif s.name == EVENTS_STREAM and f"KV_{leases_bucket}" not in s.sources:
            results.append(CheckResult(
                name=name, ok=False, detail=f"does not copy the lease bucket KV_{leases_bucket}: elections are not "
                "verified against the lease", fix="run `rr streams init` with admin credentials (adds the source)"))
        elif s.current_replicas < s.replicas:
            results.append(CheckResult(
                name=name, ok=False, required=False, detail=f"R{s.replicas}, only {s.current_replicas} current",
                fix="a NATS server is down or catching up: see ops/RUNBOOK.md, 'Recover from a lost NATS server'"))
        else:
            results.append(CheckResult(name=name, ok=True, detail=f"R{s.replicas}, {s.messages} messages"))
    return results


def check_durability(monitor: MonitorProbe | None) -> CheckResult:
    """The server fsyncs every write (`sync_interval: always`)."""
    fix_sync = ("set `sync_interval: always` in the server's jetstream block (ops/nats/node-a.conf) and restart it: "
                "with the 2-minute default, acknowledged events can be lost on power failure (Jepsen 2025)")
    if monitor is None or not monitor.reachable:
        where = monitor.url if monitor else "no monitoring URL"
        error = f": {monitor.error}" if monitor and monitor.error else ""
        return CheckResult(name="durability", ok=False, required=False, detail=f"unknown ({where}{error})",
                           fix="enable monitoring on the server (`http: 8222`) and pass --monitor http://<server>:8222; "
                               "then check that sync_interval is `always`")
    if monitor.sync_always:
        return CheckResult(name="durability", ok=True, detail="sync_interval: always (every write fsynced before its ack)")
    interval = f"{monitor.sync_interval_s:g}s" if monitor.sync_interval_s is not None else "the default"
    return CheckResult(name="durability", ok=False, required=False, detail=f"sync_interval {interval}", fix=fix_sync)


def clock_skew(streams: list[StreamProbe], monitor: MonitorProbe | None) -> tuple[float, str] | None:
    """Local minus server clock in seconds, and where the server's time came from; None when unknown."""
    for s in streams:
        if s.server_time is not None and s.sent_at is not None:
            local = s.sent_at + dt.timedelta(seconds=s.round_trip_s / 2)
            return (local - s.server_time).total_seconds(), f"stream info of {s.name}"
    if monitor is not None and monitor.server_now is not None and monitor.sent_at is not None:
        local = monitor.sent_at + dt.timedelta(seconds=monitor.round_trip_s / 2)
        return (local - monitor.server_now).total_seconds(), "/varz"
    return None


def check_clock(streams: list[StreamProbe], monitor: MonitorProbe | None, max_skew_s: float) -> CheckResult:
    """This node's clock agrees with the NATS server's within `max_skew_s`."""
    skew = clock_skew(streams, monitor)
    fix = "turn on time sync (timedatectl set-ntp true; chronyc tracking shows the offset)"
    if skew is None:
        return CheckResult(name="clock skew", ok=False, required=False, detail="unknown: no server timestamp",
                           fix="run `rr streams init` so stream info carries the server time, or pass --monitor")
    seconds, source = skew
    detail = f"{seconds:+.3f}s vs the NATS server ({source})"
    if abs(seconds) <= max_skew_s:
        return CheckResult(name="clock skew", ok=True, detail=detail)
    return CheckResult(name="clock skew", ok=False, detail=f"{detail}, more than {max_skew_s:g}s: event times and "
                       "timelines would disagree between nodes", fix=fix)


def check_permissions(perm: PermissionsProbe, node_id: str) -> list[CheckResult]:
    """This node may publish its own events, and is refused what its role forbids."""
    own = perm.own_publish
    results = [CheckResult(
        name="permissions: own events", ok=own.outcome != "denied" and own.outcome != "timeout",
        detail=f"{own.subject}: {own.outcome} ({own.detail})",
        fix=f"the server does not let {node_id} publish its own events: regenerate auth.conf with `rr auth gen` "
            "from a hosts file that lists this node, and reload the servers (systemctl reload rr-nats)")]
    if perm.role == "admin":
        return results
    for probe in perm.forbidden:
        results.append(CheckResult(
            name=f"permissions: refused {probe.subject}", ok=probe.outcome == "denied",
            detail=f"{probe.outcome} ({probe.detail})",
            fix="the servers do not enforce rr's permissions: install the auth.conf from `rr auth gen` on every "
                "NATS server, include it from the server config, and reload"))
    results.append(CheckResult(
        name="permissions: refused _INBOX.>", ok=not perm.shared_inbox_subscribe,
        detail="subscribing to every inbox was " + ("allowed" if perm.shared_inbox_subscribe else "refused"),
        fix="other nodes' replies are readable: install the generated auth.conf and reload the servers"))
    return results


def check_disk(disk: DiskProbe, min_free_gib: float) -> CheckResult:
    """Enough free space under the data dir for models and batches."""
    if disk.error:
        return CheckResult(name="disk", ok=False, detail=f"{disk.path}: {disk.error}",
                           fix=f"create {disk.path} writable by the rr user, or set RR_DATA_DIR / worker.data_dir")
    free = disk.free_bytes / GIB
    detail = f"{free:.1f} GiB free of {disk.total_bytes / GIB:.1f} GiB under {disk.path}"
    if free >= min_free_gib:
        return CheckResult(name="disk", ok=True, detail=detail)
    return CheckResult(name="disk", ok=False, detail=f"{detail}, below {min_free_gib:g} GiB",
                       fix=f"free space under {disk.path} (old job outputs, models past retention) or move the data dir")


def check_history(history: HistoryProbe) -> CheckResult:
    """The newest events of RR_EVENTS can be read within the limit (services replay them on every start)."""
    if not history.error:
        return CheckResult(name="history read", ok=True,
                           detail=f"the newest {history.read} events of RR_EVENTS in {history.seconds:.2f}s")
    return CheckResult(
        name="history read", ok=False,
        detail=f"stalled: {history.read} of the newest {history.wanted} events of RR_EVENTS read in "
               f"{history.seconds:.1f}s ({history.error}); every service's start replays the log and would stall too",
        fix="look for 'corrupt' in the NATS server's log (rr up: <data dir>/logs/nats-server.log): a damaged store "
            "needs the server stopped and the stream repaired or restored (ops/RUNBOOK.md); else the server is overloaded")


def check_leadership(leadership: LeadershipProbe, max_elections: int) -> CheckResult:
    """No role's leader was elected more than `max_elections` times within the window."""
    minutes = f"{leadership.window_s / 60:g} min"
    if leadership.error:
        return CheckResult(name="leadership", ok=False, detail=f"LEADER_ELECTED of the last {minutes} unreadable: {leadership.error}",
                           fix="see the history read check above")
    counts = ", ".join(f"{role} {n}" for role, n in sorted(leadership.elections.items())) or "none"
    churning = sorted(role for role, n in leadership.elections.items() if n > max_elections)
    if not churning:
        return CheckResult(name="leadership", ok=True, detail=f"elections in the last {minutes}: {counts}")
    return CheckResult(
        name="leadership", ok=False,
        detail=f"leadership keeps changing: elections in the last {minutes}: {counts} (more than {max_elections} "
               f"for {', '.join(churning)})",
        fix="a leader is losing its lease: look in `rr events tail` for LEADER_LOST and its reason, in the services' "
            "logs for loop lag or 'history read stalled', and check the clock and the lease TTL (leadership.ttl_s)")


def check_data_dir_lock(lock: DataDirLockProbe) -> CheckResult:
    """The data dir is free or held by running rr processes, not by processes a killed `rr up` left behind."""
    if not lock.pids:
        return CheckResult(name="data dir lock", ok=True, detail=f"free: no rr up or rr service holds {lock.path}")
    if lock.alive:
        who = ", ".join(lock.owners) or "pid " + ", ".join(map(str, lock.alive))
        return CheckResult(name="data dir lock", ok=True, detail=f"in use by {who} ({lock.path})")
    pids = ", ".join(map(str, lock.pids))
    kept = f"; still open in {', '.join(lock.keepers)}" if lock.keepers else ""
    return CheckResult(
        name="data dir lock", ok=False,
        detail=f"{lock.path} is locked, but its holder (pid {pids}) has exited{kept}: left behind by a killed rr up, "
               "they still use its store, and no rr up can start on this data dir",
        fix=f"stop those processes (`fuser -v {lock.path}` lists them), then start rr up again")


def check_gpu(gpu: GpuProbe) -> CheckResult:
    """CUDA visible where the hosts file says there is a GPU; a CPU node without one is fine."""
    if gpu.torch_cuda and gpu.devices:
        return CheckResult(name="gpu", ok=True, required=False, detail=", ".join(gpu.devices) + (f"; {gpu.nvidia_smi}" if gpu.nvidia_smi else ""))
    seen = gpu.nvidia_smi or "nvidia-smi absent"
    torch_says = "torch missing" if gpu.torch_cuda is None else "torch sees no CUDA device"
    if gpu.expected:
        return CheckResult(name="gpu", ok=False, required=False,
                           detail=f"hosts file says {gpu.expected!r}, but {torch_says} ({seen})",
                           fix="install the NVIDIA driver (nvidia-smi must work) and a CUDA build of torch, "
                               "or clear `gpu` for this host in distributed_hosts.yaml")
    return CheckResult(name="gpu", ok=True, required=False, detail=f"none: CPU node ({torch_says}; {seen})")


def check_leader(leader: LeaderProbe) -> CheckResult:
    """A scheduler leader whose every loop runs; a leader with loops down is unhealthy, whatever its lease says."""
    if leader.error:
        return CheckResult(name="leader", ok=False, required=False, detail=f"scheduler lease unreadable: {leader.error}")
    if leader.node is None:
        # Information, not a fault of this node: a fresh cluster, or one between two terms.
        return CheckResult(name="leader", ok=True, required=False,
                           detail="no scheduler leader now (`rr leader` shows the last one; start a scheduler on a candidate)")
    down = loops_down(leader.loops)
    where = f"{leader.node} (epoch {leader.epoch})"
    if not leader.loops:
        return CheckResult(name="leader", ok=True, required=False, detail=f"{where}; its loops' health not reported yet")
    if down:
        return CheckResult(name="leader", ok=False, detail=f"{where} leads with loops not running: "
                           + "; ".join(down),
                           fix=f"the leader restarts them itself; if this lasts, restart the scheduler service on {leader.node} "
                               "so another candidate leads, and read its log for the loops' errors")
    return CheckResult(name="leader", ok=True, detail=f"{where}, {len(leader.loops)} loops running")


Level = Literal["ok", "FAIL", "warn"]


def level(result: CheckResult) -> Level:
    """How the report marks a result."""
    if result.ok:
        return "ok"
    return "FAIL" if result.required else "warn"
