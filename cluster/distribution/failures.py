"""The distributors' small fold: which nodes are failing to install what (read by the leader's loop and `rr models` too).

The shared models projection keeps where each checkpoint was written (its training's
`checkpoint`) but does not read MODEL_DISTRIBUTION_FAILED; this fold adds exactly that, purely.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from eventbus.events import Event, ModelDistributed, ModelDistributionFailed
from projections.base import Anomaly, Projection, total


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """The newest failure of one node with one model, until that node installs it."""

    kind: str
    reason: str
    attempt: int
    at: dt.datetime | None = None
    object_nuid: str = ""
    seq: int = 0


class FailuresState(msgspec.Struct, frozen=True, kw_only=True):
    """Open failures per model and node; a MODEL_DISTRIBUTED from that node closes its entry."""

    last_seq: int = 0
    open: dict[str, dict[str, Failure]] = {}  # model id -> node -> failure
    anomalies: tuple[Anomaly, ...] = ()
    anomaly_count: int = 0


@total
def apply_failure(state: FailuresState, event: Event, seq: int) -> FailuresState:
    """A failure opens (or replaces) the node's entry; an installed copy closes it."""
    if isinstance(event, ModelDistributionFailed):
        failure = Failure(kind=event.kind, reason=event.reason, attempt=event.attempt, at=event.ts,
                          object_nuid=event.object_nuid, seq=seq)
        nodes = {**state.open.get(event.model_id, {}), event.node: failure}
        return msgspec.structs.replace(state, last_seq=seq, open={**state.open, event.model_id: nodes})
    if isinstance(event, ModelDistributed) and event.node in state.open.get(event.model_id, {}):
        nodes = {n: f for n, f in state.open[event.model_id].items() if n != event.node}
        opened = {m: v for m, v in state.open.items() if m != event.model_id}
        return msgspec.structs.replace(state, last_seq=seq, open={**opened, **({event.model_id: nodes} if nodes else {})})
    return msgspec.structs.replace(state, last_seq=seq)


FAILURES: Projection[FailuresState] = Projection(
    name="distributor-failures", version=1, initial=FailuresState, apply=apply_failure,
    reads=frozenset({ModelDistributionFailed.type_name(), ModelDistributed.type_name()}),
)


def corrupt_reports(state: FailuresState) -> dict[str, set[str]]:
    """Model id -> the stored object versions (nuids) some node found corrupt and has not installed since."""
    reports: dict[str, set[str]] = {}
    for model_id, nodes in state.open.items():
        nuids = {f.object_nuid for f in nodes.values() if f.kind == "corrupt" and f.object_nuid}
        if nuids:
            reports[model_id] = nuids
    return reports
