"""A worker's fence kept on its disk between runs, so that a restart reads only the elections after it.

Priming a fence from sequence 1 reads every election and lease copy of the log: few records, but
spread over all of it, so the server loads every block (58 s at 22M records; ops/bench/README.md,
"The worker's consumers at 22M"). The per-subject index cannot stand in for that read: it gives
each subject's newest record, while the fence's verdicts depend on every election ever believed
(`FenceView.role_of` names the role of each old epoch: a decision of an old term is STALE, not
UNKNOWN_OLD, and an election reusing another role's old epoch is not believed). A fence folded
up to position P and then over P+1..end is the fold from the start, exactly: so the worker saves
its fence with its position, and the next start reads only what came after, provided the log is
still the one the fence was folded from (`resumable`), whose head retention may have trimmed since.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import msgspec

from eventbus.history import Record
from projections.fencing import FenceView

log = logging.getLogger(__name__)


class Anchor(msgspec.Struct, frozen=True, kw_only=True):
    """One record the saved fence learnt from: the same sequence must hold the same record in the log resumed."""

    seq: int
    subject: str
    digest: str


class SavedFence(msgspec.Struct, frozen=True, kw_only=True):
    """What a fence knew, folded from the log's first record up to `position`."""

    view: FenceView
    position: int
    first_seq: int  # the log's first sequence when it was folded from it (what it may know beyond the log's head)
    anchor: Anchor


def anchor_of(record: Record) -> Anchor:
    """The anchor a learnt record gives (a digest of its body: ids are unique, so a new log differs)."""
    return Anchor(seq=record.seq, subject=record.subject, digest=hashlib.blake2b(record.data, digest_size=16).hexdigest())


def resumable(saved: SavedFence, candidates: tuple[str, ...], end: int, at_anchor: Record | None) -> bool:
    """Whether the saved fence was folded from this log, so that folding the records after `saved.position` goes on from it.

    The candidates decide which elections were believed; a log made again (its anchor record
    differs) is not the log the fence was folded from. A log whose head retention trimmed since
    is: the fence then knows elections a fold of what the log still holds would not (the state
    outlives the records it was folded from, as the projections' snapshots do), as long as the
    anchor (the record at its position when saved) is still kept.
    """
    return (saved.view.candidates == candidates and saved.position <= end
            and at_anchor is not None and anchor_of(at_anchor) == saved.anchor)


async def load(path: Path) -> SavedFence | None:
    """The fence saved at `path`; None when there is none or it cannot be read (the full read then)."""
    try:
        data = await asyncio.to_thread(path.read_bytes)
        return msgspec.json.decode(data, type=SavedFence)
    except (OSError, msgspec.DecodeError):
        return None


async def save(path: Path, saved: SavedFence) -> None:
    """Write the fence to `path` whole or not at all (a crash mid-write leaves the previous one)."""
    try:
        await asyncio.to_thread(_write_atomically, path, msgspec.json.encode(saved))
    except OSError as exc:  # a full disk costs the next start the full read, nothing else
        log.warning("worker fence not saved to %s (%s): the next start reads every election from sequence 1", path, exc)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
