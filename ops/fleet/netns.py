"""The fleet's network, as root with iproute2 (and nftables for NAT hosts): namespaces, a bridge, cuts (blocking).

Traffic only ever goes to the addresses of hosts this module created: each host is a network
namespace with one veth on the fleet's bridge; the root namespace holds the bridge address so
that the operator's `rr` reaches the NATS hosts.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from ops.fleet.plan import FleetError, FleetPlan, HostPlan, owns_name

NAT_TABLE = "rrnat"
SPLIT_PROTO = "static"


def ip(*args: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ...` (inside `namespace` when given); FleetError with ip's own message on failure."""
    argv = ["ip", *(["netns", "exec", namespace, "ip"] if namespace else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise FleetError(f"{' '.join(argv)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done


def check_tools(plan: FleetPlan) -> None:
    """Refuse to start, in one line, without root, iproute2 or (for NAT hosts) nftables."""
    if shutil.which("ip") is None:
        raise FleetError("`ip` not found: apt-get install -y iproute2")
    if any(h.nat for h in plan.hosts) and shutil.which("nft") is None:
        raise FleetError("--nat needs nftables: apt-get update && apt-get install -y nftables")
    probe = subprocess.run(["ip", "netns", "add", f"{plan.bridge}probe"[:15]], capture_output=True, text=True)
    if probe.returncode != 0:
        raise FleetError(f"cannot create network namespaces ({probe.stderr.strip()}): run as root on Linux")
    ip("netns", "del", f"{plan.bridge}probe"[:15], check=False)


def taken_subnets() -> set[int]:
    """Third octets of 10.231.X.0/24 addresses already on this machine's links."""
    done = ip("-j", "addr", "show", check=False)
    taken = set()
    for link in json.loads(done.stdout or "[]"):
        for addr in link.get("addr_info", []):
            parts = str(addr.get("local", "")).split(".")
            if len(parts) == 4 and parts[:2] == ["10", "231"]:
                taken.add(int(parts[2]))
    return taken


def make_bridge(plan: FleetPlan) -> None:
    """The fleet's bridge with the gateway address, up."""
    ip("link", "add", plan.bridge, "type", "bridge")
    ip("addr", "add", f"{plan.gateway}/24", "dev", plan.bridge)
    ip("link", "set", plan.bridge, "up")


def make_host(plan: FleetPlan, host: HostPlan) -> None:
    """The host's namespace, its veth on the bridge as eth0 with its address, loopback up, NAT rules if any."""
    ip("netns", "add", host.namespace)
    peer = f"{host.veth}p"
    ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
    ip("link", "set", peer, "netns", host.namespace)
    ip("link", "set", host.veth, "master", plan.bridge)
    ip("link", "set", host.veth, "up")
    ip("link", "set", "lo", "up", namespace=host.namespace)
    ip("link", "set", peer, "name", "eth0", namespace=host.namespace)
    ip("addr", "add", f"{host.address}/24", "dev", "eth0", namespace=host.namespace)
    ip("link", "set", "eth0", "up", namespace=host.namespace)
    if host.nat:
        drop_inbound(host)


def drop_inbound(host: HostPlan) -> None:
    """NAT-like: new inbound connections are dropped; replies to what the host dialled, and loopback, pass."""
    rules = (f"table inet {NAT_TABLE} {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n"
             "  iif lo accept\n  ct state established,related accept\n  ct state new drop\n }\n}\n")
    done = subprocess.run(["ip", "netns", "exec", host.namespace, "nft", "-f", "-"], input=rules,
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise FleetError(f"nft in {host.namespace}: {done.stderr.strip()}")


def cut(host: HostPlan) -> None:
    """Take the host's link off the bridge: it reaches no one and no one reaches it."""
    ip("link", "set", host.veth, "down")


def split(group_a: list[HostPlan], group_b: list[HostPlan]) -> None:
    """Neither group reaches the other (blackhole routes in each member); hosts in neither reach everyone."""
    for ours, theirs in ((group_a, group_b), (group_b, group_a)):
        for host in ours:
            for other in theirs:
                ip("route", "replace", "blackhole", f"{other.address}/32", "proto", SPLIT_PROTO, namespace=host.namespace)


def heal(plan: FleetPlan) -> None:
    """Every link up and every split route gone; NAT hosts stay behind their NAT."""
    for host in plan.hosts:
        if namespace_exists(host.namespace):
            ip("link", "set", host.veth, "up", check=False)
            ip("route", "flush", "type", "blackhole", namespace=host.namespace, check=False)


def namespaces() -> list[str]:
    """Every network namespace on this machine."""
    done = ip("-j", "netns", "list", check=False)
    return [n["name"] for n in json.loads(done.stdout or "[]")]


def namespace_exists(name: str) -> bool:
    """Whether the namespace is there."""
    return name in namespaces()


def namespace_pids(name: str) -> list[int]:
    """Every process living in the namespace (what `down` must end)."""
    done = ip("netns", "pids", name, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def links() -> list[str]:
    """Every link name in the root namespace."""
    done = ip("-j", "link", "show", check=False)
    return [link["ifname"] for link in json.loads(done.stdout or "[]")]


def remove_network(run_id: str | None) -> list[str]:
    """Delete every namespace and link fleet `run_id` (every fleet's, with None) made; the names removed."""
    removed = []
    for name in namespaces():
        if owns_name(run_id, name):
            ip("netns", "del", name, check=False)
            removed.append(name)
    for name in links():
        if owns_name(run_id, name):
            ip("link", "del", name, check=False)
            removed.append(name)
    return removed
