"""The subject layout, declared in one place.

Events:     rr.evt.<aggregate>.<aggregate_id>.<TYPE>.<source_node>
              rr.evt.>                          everything
              rr.evt.host.gpu-7.>               one host's membership
              rr.evt.work.w-1a2b.>              one work item's whole life
              rr.evt.*.*.WORK_FAILED.*          one kind of event
              rr.evt.*.*.*.gpu-7                everything node gpu-7 published
Telemetry:  rr.tel.hb.<node>                    heartbeats (bounded stream, not the forensic log)
Dead letters: rr.dlq.<stream>.<consumer>        parked poison messages with their reason

The source node closes the subject so that per-node publish permissions can be granted
with one wildcard per event type (a worker may only publish rr.evt.*.*.<TYPE>.<its node>
for the types eventbus/authority.py gives it).
"""

from __future__ import annotations

import re

EVENTS_ROOT = "rr.evt"
TELEMETRY_ROOT = "rr.tel"
DEADLETTER_ROOT = "rr.dlq"
ALL_EVENTS = f"{EVENTS_ROOT}.>"

# A subject token may not hold separators, wildcards or whitespace.
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-:]")


def token(value: str) -> str:
    """Make any id usable as a single subject token (dots, spaces and wildcards become '_')."""
    cleaned = _UNSAFE.sub("_", value)
    return cleaned or "_"


def event_subject(aggregate: str, aggregate_id: str, type_name: str, source: str) -> str:
    """The subject one event is published on."""
    return f"{EVENTS_ROOT}.{aggregate}.{token(aggregate_id)}.{type_name}.{token(source)}"


def aggregate_filter(aggregate: str, aggregate_id: str) -> str:
    """Subject filter covering every event of one aggregate (used for optimistic concurrency)."""
    return f"{EVENTS_ROOT}.{aggregate}.{token(aggregate_id)}.>"


def aggregate_type_filter(aggregate: str, aggregate_id: str, type_name: str) -> str:
    """Subject filter covering one aggregate's events of one type, whoever published them."""
    return f"{EVENTS_ROOT}.{aggregate}.{token(aggregate_id)}.{type_name}.*"


def type_filter(type_name: str) -> str:
    """Subject filter covering every event of one type."""
    return f"{EVENTS_ROOT}.*.*.{type_name}.*"


# Aggregates with few ids even in a year's log (roles, nodes, quarantines, models, config keys: thousands
# at most), against one id per work item and per batch or copy in `work` and `data` (millions).
FEW_IDS = frozenset({"leader", "lease", "host", "quarantine", "config", "model"})
_ROOT_TOKENS = EVENTS_ROOT.split(".")
_WILDCARDS = ("*", ">")


def few_subjects(subject_filter: str) -> bool:
    """Whether an event filter matches few of the log's distinct subjects: one aggregate, and one id or few ids.

    A consumer with several filters makes the server count what they match over the whole stream
    when it is created, wherever it starts: ~0.01 s for these, 3-25 s at 22M records as soon as
    one spans the millions of work items' and batches' subjects (ops/bench/README.md, "What makes
    a consumer slow to create"). A filter outside the log is not judged here.
    """
    tokens = subject_filter.split(".")
    if tokens[:2] != _ROOT_TOKENS:
        return True
    if len(tokens) < 4:  # the whole log
        return False
    aggregate, aggregate_id = tokens[2], tokens[3]
    return aggregate not in _WILDCARDS and (aggregate_id not in _WILDCARDS or aggregate in FEW_IDS)


def source_filter(node: str) -> str:
    """Subject filter covering every event one node published."""
    return f"{EVENTS_ROOT}.*.*.*.{token(node)}"


def election_filter(role: str) -> str:
    """Subject filter covering every LEADER_ELECTED of one role: the fence of that role's decisions.

    Only elections are written there (LEADER_LOST has its own type token), so the newest
    message on it is always the current leadership's announcement.
    """
    return f"{EVENTS_ROOT}.leader.{token(role)}.LEADER_ELECTED.*"


def heartbeat_subject(node: str) -> str:
    """Subject of one node's heartbeats."""
    return f"{TELEMETRY_ROOT}.hb.{token(node)}"


def deadletter_subject(stream: str, consumer: str) -> str:
    """Subject a consumer parks its poison messages on."""
    return f"{DEADLETTER_ROOT}.{token(stream)}.{token(consumer)}"


WORKREFS_BUCKET = "rr_workrefs"  # KV: the timeline's work-ref index, one entry per work item (servicekit/workrefentries.py)
