"""Projections: pure folds of the event log into current state (cluster, work, models, data, elo).

Each module has `apply(state, event, seq) -> state` and a `PROJECTION` descriptor; `bundle`
folds them all together (`fold_all`), `snapshot` versions their bytes, and `rebuild` is the
thin shell that reads the stream and snapshots through eventbus.
"""

from projections.bundle import ProjectionSet, fold_all, fold_all_events

__all__ = ["ProjectionSet", "fold_all", "fold_all_events"]
