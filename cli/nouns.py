"""The `rr` commands: each noun's module and the one line `rr --help` shows for it, without importing any of them.

`rr --help` lists every command from this table alone; a command's own module (and its NATS, projection
and HTTP imports) is imported only when that command runs or shows its own help.
"""

from __future__ import annotations

# noun -> one line of help; the module is cli.commands.<noun>, whose register() adds the noun with summary(noun).
# Append yours here (one line).
SUMMARIES: dict[str, str] = {
    "up": "run a one-node cluster: embedded nats-server, streams, every service",
    "streams": "provision and inspect the JetStream streams",
    "events": "read the event log",
    "dlq": "inspect the dead-letter stream",
    "leader": "who leads each singleton role (node, epoch, since)",
    "status": "the cluster now: leaders, nodes, work, models, data",
    "replay": "the cluster as it was at a time or stream sequence",
    "timeline": "what happened to a node, work item or model, in order, with reasons",
    "lineage": "where a model came from: batches, training, evaluation, copies",
    "nodes": "nodes: online/offline, resources, roles, last heartbeat, loop lag",
    "models": "promoted model per config, and which nodes hold it",
    "data": "game data per config, newest batches and where their copies are",
    "work": "the work queue: add, list, show, cancel",
    "auth": "NATS users, permissions and per-node credentials",
    "doctor": "preflight this node: packages, NATS, JetStream, streams, durability, permissions, disk, GPU, clock",
    "services": "running services (micro discovery): name, node, version, state",
    "quarantine": "distrust a node's, a batch's or a model's outputs and what derives from them",
    "whatif": "replay a recorded window through other scheduler settings, side by side",
}


def module_of(noun: str) -> str:
    """The module whose `register(subparsers)` adds `noun`."""
    return f"cli.commands.{noun}"


def summary(noun: str) -> str:
    """The one line `rr --help` shows for `noun`."""
    return SUMMARIES[noun]
