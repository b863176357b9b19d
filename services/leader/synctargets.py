"""Which nodes get game data and whose data is at risk, pure: from the cluster fold and the hosts file.

A training node is an alive node the hosts file gives a training role (nn_training, training,
mixed) and at least `min_training_vram_gb` of GPU memory (the seeds' GPU table). A node the
hosts file does not list (laptop mode: no hosts file at all) takes any work, training
included, so it is a target too. Ephemeral nodes (`ephemeral: true`: rented marketplace
machines) may vanish with their disks, so their batches are copied first.
"""

from __future__ import annotations

from config.hosts import HostEntry, HostsConfig
from config.sections.sync import SyncSettings
from projections.cluster import ClusterState, NodeInfo


def reported_vram_gb(node: NodeInfo) -> float:
    """The largest GPU memory the node's agent reported when it came online (0 for none)."""
    gpus = node.resources.gpus if node.resources is not None else []
    return max((g.memory_gb for g in gpus), default=0.0)


def trains(node: NodeInfo, entry: HostEntry | None, settings: SyncSettings) -> bool:
    """Whether a node runs training, by its hosts file entry (unlisted: yes, as the scheduler treats it)."""
    if entry is None:
        return True
    if entry.status != "ready" or not set(entry.all_roles()) & set(settings.training_roles):
        return False
    vram = entry.vram_gb() or reported_vram_gb(node)
    return vram >= settings.min_training_vram_gb


def training_targets(cluster: ClusterState, hosts: HostsConfig | None, settings: SyncSettings) -> frozenset[str]:
    """The alive nodes that train."""
    listed = hosts.hosts if hosts is not None else {}
    return frozenset(n.node for n in cluster.nodes.values() if n.alive and trains(n, listed.get(n.node), settings))


def alive_nodes(cluster: ClusterState) -> frozenset[str]:
    """Nodes the log says are alive."""
    return frozenset(n.node for n in cluster.nodes.values() if n.alive)


def ephemeral_nodes(hosts: HostsConfig | None) -> frozenset[str]:
    """Nodes the hosts file marks `ephemeral: true`."""
    return frozenset(name for name, entry in (hosts.hosts.items() if hosts else ()) if entry.ephemeral)
