"""What `rr doctor`'s probes found on a node, as plain values: the input of cli/doctor/checks.py."""

from __future__ import annotations

import datetime as dt

import msgspec

from eventbus.probe import JetStreamProbe, PublishProbe, StreamProbe


class PackageProbe(msgspec.Struct, frozen=True, kw_only=True):
    """One Python package: importable here, and its version."""

    module: str
    distribution: str
    required: bool
    importable: bool
    version: str = ""
    error: str = ""


class LeaderProbe(msgspec.Struct, frozen=True, kw_only=True):
    """The scheduler's lease as this node reads it: who leads, and its loops' health from its last renewal."""

    node: str | None = None  # None: nobody leads
    epoch: int | None = None
    loops: dict[str, str] = {}  # loop name -> "running", or its state and last error
    error: str = ""  # the lease could not be read


class CredentialsProbe(msgspec.Struct, frozen=True, kw_only=True):
    """The node's credentials file, if one is configured."""

    path: str = ""  # "": RR_NATS_CREDS unset
    user: str = ""
    role: str = ""
    error: str = ""


class ConnectionProbe(msgspec.Struct, frozen=True, kw_only=True):
    """Whether a NATS server accepted this node's connection."""

    url: str
    connected: bool
    error: str = ""
    server_version: str = ""


class MonitorProbe(msgspec.Struct, frozen=True, kw_only=True):
    """The server's monitoring endpoint (/varz), if reachable."""

    url: str
    reachable: bool
    error: str = ""
    sync_always: bool = False
    sync_interval_s: float | None = None
    server_now: dt.datetime | None = None
    sent_at: dt.datetime | None = None
    round_trip_s: float = 0.0


class PermissionsProbe(msgspec.Struct, frozen=True, kw_only=True):
    """A harmless allowed publish and forbidden publish/subscribe, with this node's credentials."""

    role: str
    own_publish: PublishProbe
    forbidden: list[PublishProbe] = []
    shared_inbox_subscribe: bool = False  # True: the server let us subscribe to _INBOX.>


class DiskProbe(msgspec.Struct, frozen=True, kw_only=True):
    """Free space under the data dir."""

    path: str
    free_bytes: int = 0
    total_bytes: int = 0
    error: str = ""


class DataDirLockProbe(msgspec.Struct, frozen=True, kw_only=True):
    """Who holds the data dir's lock (cli/up/lock.py) now: from /proc/locks and the lock files."""

    path: str  # <data dir>/rr.lock
    pids: list[int] = []  # holders of the flock; [] when free
    alive: list[int] = []  # those of `pids` still running
    owners: list[str] = []  # "rr up pid 12", "rr-service worker pid 13": what the running holders' lock files say
    keepers: list[str] = []  # "nats-server pid 14": processes with the file open, found when no holder runs


class HistoryProbe(msgspec.Struct, frozen=True, kw_only=True):
    """A timed read of the newest events of RR_EVENTS, bounded by `limit_s`."""

    wanted: int
    limit_s: float
    read: int = 0
    seconds: float = 0.0
    error: str = ""  # "": it completed


class LeadershipProbe(msgspec.Struct, frozen=True, kw_only=True):
    """LEADER_ELECTED events per role in the last `window_s` seconds of the log."""

    window_s: float
    elections: dict[str, int] = {}
    error: str = ""


class GpuProbe(msgspec.Struct, frozen=True, kw_only=True):
    """CUDA as torch sees it and nvidia-smi's answer; `expected` is the hosts file's gpu for this node."""

    torch_cuda: bool | None = None  # None: torch not importable
    devices: list[str] = []
    nvidia_smi: str = ""  # driver line, "" when nvidia-smi is absent or failed
    expected: str = ""


class ConfigProbe(msgspec.Struct, frozen=True, kw_only=True):
    """The rr config and hosts file as loaded (an error is InvalidConfig's one line)."""

    path: str = ""  # "": no config file, defaults
    error: str = ""
    hosts_path: str = ""  # "": the config names no hosts file
    hosts_error: str = ""
    node_in_hosts: bool = True


class Probes(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `rr doctor` measured on this node."""

    node_id: str
    python: tuple[int, int, int]
    packages: list[PackageProbe]
    config: ConfigProbe = ConfigProbe()
    credentials: CredentialsProbe = CredentialsProbe()
    connection: ConnectionProbe | None = None  # None: not attempted (nats-py missing)
    jetstream: JetStreamProbe | None = None
    streams: list[StreamProbe] = []
    expected_replicas: int = 1
    leases_bucket: str = "rr_leases"  # RR_EVENTS must source it (the lease copies elections are verified by)
    monitor: MonitorProbe | None = None
    permissions: PermissionsProbe | None = None
    disk: DiskProbe | None = None
    min_free_gib: float = 10.0
    gpu: GpuProbe = GpuProbe()
    max_skew_s: float = 1.0
    data_lock: DataDirLockProbe | None = None
    history: HistoryProbe | None = None
    leadership: LeadershipProbe | None = None
    max_elections: int = 6  # per role within leadership.window_s
    embedded: bool = False  # NATS is this node's `rr up` embedded server: production server advice does not apply
    leader: LeaderProbe | None = None  # None: not read (no connection)
