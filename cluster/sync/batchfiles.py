"""Where each batch's file was written, pure (the shared data projection keeps its hash and size, not its path)."""

from __future__ import annotations

import msgspec

from eventbus.events import ArtifactRef, Event, SelfplayComplete
from projections.base import Anomaly, Projection, total
from projections.pmap import PMap


class BatchFilesState(msgspec.Struct, frozen=True, kw_only=True):
    """Batch id -> the file selfplay wrote (with its node)."""

    last_seq: int = 0
    files: PMap[str, ArtifactRef] = msgspec.field(default_factory=PMap)
    anomalies: tuple[Anomaly, ...] = ()
    anomaly_count: int = 0


@total
def apply_batch_file(state: BatchFilesState, event: Event, seq: int) -> BatchFilesState:
    """A SELFPLAY_COMPLETE with a data file records where it is."""
    if not isinstance(event, SelfplayComplete) or event.data is None:
        return msgspec.structs.replace(state, last_seq=seq)
    ref = event.data if event.data.node else msgspec.structs.replace(event.data, node=event.node)
    return msgspec.structs.replace(state, last_seq=seq, files=state.files.set(event.batch_id, ref))


BATCH_FILES: Projection[BatchFilesState] = Projection(
    name="sync-batch-files", version=1, initial=BatchFilesState, apply=apply_batch_file,
    reads=frozenset({SelfplayComplete.type_name()}),
)
