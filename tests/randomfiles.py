"""Files of random bytes for the distribution and sync tests, with the reference an event carries for them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from eventbus.events import ArtifactRef


def random_artifact(path: Path, size: int, *, node: str = "") -> ArtifactRef:
    """Write `size` random bytes at `path` (making its folder); their reference, as TRAINING_COMPLETE or SELFPLAY_COMPLETE names it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = os.urandom(size)
    path.write_bytes(content)
    return ArtifactRef(path=str(path), size_bytes=size, sha256=hashlib.sha256(content).hexdigest(), node=node)
