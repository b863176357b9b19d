"""A fleet on one machine, planned without I/O: hosts, names, addresses, directories and the files each host reads.

Every name carries the fleet's run id so that `down` finds what an `up` made (even one that crashed
half-way) and two fleets on one machine never touch each other:

    namespace   rr<run>-<host>          one network stack per host
    bridge      rr<run>br               in the root namespace, address <subnet>.1
    veth        rr<run>v<i>             the bridge side of host i (its namespace side is eth0)

Hosts `nats-1..3` run a clustered nats-server (R3 streams, `sync_interval: always`) and the
coordinator services; hosts `w-1..N` run agents, workers, distributors and sync. Every host has
its own directory under the fleet root (config, credentials, data, logs): no two share one.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

PREFIX = "rr"
NATS_PORT = 4222
CLUSTER_PORT = 6222
MONITOR_PORT = 8222
API_PORT = 8770
SUBNET_BASE = "10.231"  # private, and 10.231.0.0/16 is used by nothing real on these machines
NATS_HOSTS = 3
COORDINATOR_SERVICES = ("leader", "agent", "distributor", "sync", "api")
WORKER_SERVICES = ("agent", "worker", "distributor", "sync")
RUN_ID = re.compile(r"^[a-z0-9]{1,6}$")  # interface names stay within the kernel's 15 characters


class FleetError(ValueError):
    """A fleet request that cannot be planned; the message says what to change."""


class HostPlan(msgspec.Struct, frozen=True, kw_only=True):
    """One host: its namespace, link, address, node id, directory and services."""

    name: str
    index: int  # 2.. : its address is <subnet>.<index>
    kind: str  # "nats" | "worker"
    namespace: str
    veth: str  # bridge side, in the root namespace
    address: str
    nat: bool = False  # inbound connections dropped: it only dials out
    role: str = "coordinator"  # its role in the hosts file
    services: tuple[str, ...] = ()
    root: str = ""  # <fleet root>/hosts/<name>

    @property
    def node_id(self) -> str:
        """The node id its services run as (also its NATS user)."""
        return self.name

    def path(self, *parts: str) -> Path:
        """A path under this host's own directory."""
        return Path(self.root).joinpath(*parts)


class FleetPlan(msgspec.Struct, frozen=True, kw_only=True):
    """The whole fleet: what `up` creates and `down` removes."""

    run_id: str
    root: str
    subnet: int  # the third octet: 10.231.<subnet>.0/24
    bridge: str
    gateway: str  # the bridge's address: the root namespace's way in
    hosts: tuple[HostPlan, ...]

    def host(self, name: str) -> HostPlan:
        """The host called `name`; FleetError naming the hosts there are."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise FleetError(f"no host {name!r} in fleet {self.run_id}; hosts: {', '.join(h.name for h in self.hosts)}")

    def nats_hosts(self) -> list[HostPlan]:
        """The three hosts running nats-server."""
        return [h for h in self.hosts if h.kind == "nats"]

    def nats_urls(self) -> list[str]:
        """Every NATS server's client URL."""
        return [f"nats://{h.address}:{NATS_PORT}" for h in self.nats_hosts()]


def subnet_for(run_id: str, taken: set[int]) -> int:
    """The third octet for a run: derived from its id, moved past octets other fleets hold."""
    start = int.from_bytes(run_id.encode(), "big") % 250 + 1
    for step in range(250):
        octet = (start - 1 + step) % 250 + 1
        if octet not in taken:
            return octet
    raise FleetError("every 10.231.X.0/24 subnet is held by another fleet; run `python -m ops.fleet down --all`")


def plan_fleet(run_id: str, root: Path, *, workers: int, nat: int, subnet: int, trainers: int = 1) -> FleetPlan:
    """3 NATS hosts and `workers` worker hosts, the last `nat` of them behind NAT; the first `trainers` train."""
    if not RUN_ID.match(run_id):
        raise FleetError(f"run id {run_id!r}: 1-6 lower-case letters or digits")
    if workers < 1 or not 0 <= nat <= workers or not 0 <= trainers <= workers:
        raise FleetError(f"--workers {workers} --nat {nat}: need workers >= 1 and 0 <= nat <= workers")
    names = [("nats", f"nats-{i}") for i in range(1, NATS_HOSTS + 1)]
    names += [("worker", f"w-{i}") for i in range(1, workers + 1)]
    hosts = []
    for i, (kind, name) in enumerate(names):
        worker_number = i - NATS_HOSTS + 1
        hosts.append(HostPlan(
            name=name, index=i + 2, kind=kind, namespace=f"{PREFIX}{run_id}-{name}", veth=f"{PREFIX}{run_id}v{i}",
            address=f"{SUBNET_BASE}.{subnet}.{i + 2}", nat=kind == "worker" and worker_number > workers - nat,
            role="coordinator" if kind == "nats" else ("training" if worker_number <= trainers else "selfplay"),
            services=COORDINATOR_SERVICES if kind == "nats" else WORKER_SERVICES,
            root=str(root / "hosts" / name),
        ))
    return FleetPlan(run_id=run_id, root=str(root), subnet=subnet, bridge=f"{PREFIX}{run_id}br",
                     gateway=f"{SUBNET_BASE}.{subnet}.1", hosts=tuple(hosts))


def owns_name(run_id: str | None, name: str) -> bool:
    """Whether a namespace or link name was made by fleet `run_id` (any fleet's, with None)."""
    if run_id is None:
        return re.match(rf"^{PREFIX}[a-z0-9]{{1,6}}(-|v\d+p?$|br$)", name) is not None
    return name.startswith(f"{PREFIX}{run_id}-") or name == f"{PREFIX}{run_id}br" or re.match(rf"^{PREFIX}{run_id}v\d+p?$", name) is not None


def split_groups(plan: FleetPlan, spec: str) -> tuple[list[HostPlan], list[HostPlan]]:
    """`A,B/C,D` as two groups of hosts that will not reach each other; FleetError on an unknown or repeated host."""
    sides = spec.split("/")
    if len(sides) != 2 or not all(s.strip() for s in sides):
        raise FleetError(f"split {spec!r}: write two groups of hosts, e.g. nats-1,w-1/nats-2,nats-3,w-2")
    groups = tuple([plan.host(n.strip()) for n in side.split(",") if n.strip()] for side in sides)
    overlap = {h.name for h in groups[0]} & {h.name for h in groups[1]}
    if overlap:
        raise FleetError(f"split {spec!r}: {', '.join(sorted(overlap))} on both sides")
    return groups[0], groups[1]
