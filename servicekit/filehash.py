"""SHA-256 of a file, computed one way by the services and the jobs alike.

It blocks on the disk (about 1.5 GB/s here): services call it through `asyncio.to_thread`.
It imports nothing of rr, so a job program can use it without starting anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> tuple[int, str]:
    """(bytes read, sha256 hex) of a file."""
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return f.tell(), digest.hexdigest()
