"""An evaluation's candidate on this node: the trainer's file where it is this node's, else fetched from the models bucket.

The pipeline names a candidate by model id and SHA-256 (services/leader/pipeline.py); the
trainer's distributor uploads it to the models bucket under its model id. An evaluator on
another node fetches it into <worker dir>/candidates/<model id>.pth, verified, and runs the job
on that copy. The upload may lag the evaluation item by seconds: a missing object is waited
for (polling) up to `worker.candidate_wait_s`, then the attempt fails naming the bucket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import msgspec

from eventbus.connection import Bus
from eventbus.errors import BusError
from eventbus.events import WorkAdded
from eventbus.objects import ObjectCorrupt, ObjectMissing
from eventbus.subjects import token
from servicekit.filehash import sha256_file
from servicekit.fileplace import fetch_and_place

log = logging.getLogger(__name__)

POLL_S = (0.5, 1.0, 2.0, 4.0)


class CandidateRef(msgspec.Struct, frozen=True, kw_only=True):
    """Which checkpoint an evaluation plays: its model id, content hash and the trainer's path."""

    model_id: str
    sha256: str
    size_bytes: int | None = None
    origin_path: str = ""


class CandidateUnavailable(Exception):
    """The candidate could not be had on this node; the message is the attempt's failure reason."""


def candidate_ref(item: WorkAdded) -> CandidateRef | None:
    """The candidate an evaluation item names, None for other items or old items without a SHA-256 (pure)."""
    params = item.params
    if item.work_type != "evaluation" or not params.get("candidate_sha256") or not params.get("model_id"):
        return None
    size = params.get("candidate_size")
    return CandidateRef(model_id=str(params["model_id"]), sha256=str(params["candidate_sha256"]).lower(),
                        size_bytes=int(size) if isinstance(size, int) and not isinstance(size, bool) else None,
                        origin_path=str(params.get("candidate") or ""))


def with_candidate(item: WorkAdded, path: Path) -> WorkAdded:
    """The item with `candidate` naming this node's copy (pure)."""
    return msgspec.structs.replace(item, params={**item.params, "candidate": str(path)})


def _verified(path: Path, sha256: str) -> bool:
    """Whether the file exists with that SHA-256 (blocking)."""
    try:
        return path.is_file() and sha256_file(path)[1] == sha256
    except OSError:
        return False


class CandidateFetcher:
    """Finds or fetches candidates for one node's evaluations."""

    def __init__(self, bus: Bus, bucket: str, cache_dir: Path, *, wait_s: float, idle_timeout_s: float = 30.0) -> None:
        self._bus = bus
        self._bucket = bucket
        self._cache = cache_dir
        self._wait_s = wait_s
        self._idle_timeout_s = idle_timeout_s

    def cached_path(self, ref: CandidateRef) -> Path:
        """<cache>/<model id>.pth."""
        return self._cache / f"{token(ref.model_id)}.pth"

    async def local(self, ref: CandidateRef) -> Path:
        """A verified local copy of the candidate; CandidateUnavailable with the reason when there is none."""
        for path in (Path(ref.origin_path) if ref.origin_path else None, self.cached_path(ref)):
            if path is not None and await asyncio.to_thread(_verified, path, ref.sha256):
                return path
        return await self._fetch(ref)

    async def _fetch(self, ref: CandidateRef) -> Path:
        dest = self.cached_path(ref)
        part = dest.with_suffix(".part")
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        deadline = time.monotonic() + self._wait_s
        tries = 0
        while True:
            try:
                await fetch_and_place(self._bus, self._bucket, ref.model_id, part, dest, expect_sha256=ref.sha256,
                                      expect_size=ref.size_bytes, idle_timeout_s=self._idle_timeout_s)
                log.info("worker: candidate %s fetched from %s (sha256 %s verified)", ref.model_id, self._bucket, ref.sha256[:12])
                return dest
            except ObjectMissing:
                reason = f"not in bucket {self._bucket} (the trainer's distributor uploads it)"
            except (ObjectCorrupt, OSError) as exc:  # a wrong copy or a full disk: waiting does not help
                raise CandidateUnavailable(f"candidate {ref.model_id}: {exc}") from None
            except BusError as exc:  # unreachable or replaced while read: try again
                reason = str(exc)
            if time.monotonic() >= deadline:
                raise CandidateUnavailable(f"candidate {ref.model_id} (sha256 {ref.sha256[:12]}): {reason}; "
                                           f"waited {self._wait_s:.0f}s (worker.candidate_wait_s)")
            await asyncio.sleep(POLL_S[min(tries, len(POLL_S) - 1)])
            tries += 1
