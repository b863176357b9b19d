"""Where a work item's timeline starts: the API's cluster state kept on its own, and the fold state it gives.

A work item's timeline folds leadership (the fence), the lease copies and its nodes' membership
alongside its own records. Read from sequence 1 those are spread over the whole log, and the
server loads every message block in between. The API saves its bundle's cluster part beside the
bundle (a few KB: leaders, nodes and the fence), so the timeline starts from the newest one
before the item's first record and reads leadership and membership only from there.
"""

from __future__ import annotations

import msgspec

from projections import bundle, cluster
from projections.base import Projection
from projections.bundle import ProjectionSet
from projections.fence import Fence

# Its own name: only the API saves it, from a fold of every record, believing any node's elections
# or its configured candidates (`start_state` refuses the latter). The services' cluster folds keep
# their snapshots under "cluster", folded from the subjects they read.
PROJECTION: Projection[cluster.ClusterState] = Projection(
    name="timeline-cluster",
    version=cluster.VERSION,
    initial=cluster.ClusterState,
    apply=cluster.apply,
    reads=cluster.PROJECTION.reads,
)


def start_state(context: cluster.ClusterState) -> ProjectionSet | None:
    """The timeline's fold state at `context.last_seq`, when no record of the item's own reads is at or before it.

    None when the snapshot cannot stand for the records the timeline would have folded: a fence
    believing only some candidates (the timeline believes any node's elections), or one that
    learnt an epoch from a decision no election named (`newest_unknown`), which may have been
    another aggregate's decision the timeline never reads. Otherwise every fenced part saw the
    same elections and copies, so each starts with the cluster's fence view; the counts of what
    was dropped only ever compare before and after one record.
    """
    view = context.fence.view
    if view.candidates or view.newest_unknown:
        return None
    seq, fence = context.last_seq, Fence(view=view)
    parts: dict[str, object] = {}
    for name, part in bundle.PARTS.items():
        initial = part.initial()
        if name == "cluster":
            parts[name] = context
        elif hasattr(initial, "fence"):
            parts[name] = msgspec.structs.replace(initial, last_seq=seq, fence=fence)
        else:
            parts[name] = msgspec.structs.replace(initial, last_seq=seq)
    return msgspec.structs.replace(ProjectionSet(last_seq=seq), **parts)
