"""SHA-256 of a file, computed one way by the services and the jobs alike (and of a copy, as it is written).

It blocks on the disk (about 1.5 GB/s here): services call it through `asyncio.to_thread`.
It imports nothing of rr, so a job program can use it without starting anything.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path) -> tuple[int, str]:
    """(bytes read, sha256 hex) of a file."""
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return f.tell(), digest.hexdigest()


def copy_hashed(src: Path, dest: Path) -> tuple[int, str]:
    """Copy a file, fsync it; (bytes, sha256 hex) of what was written."""
    digest = hashlib.sha256()
    size = 0
    with src.open("rb") as reader, dest.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return size, digest.hexdigest()
