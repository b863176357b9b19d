"""Putting a file under its final name only once it is complete and verified (blocking helpers: call through asyncio.to_thread).

A file becomes visible under its final name only by `os.replace` of a complete, fsynced file
on the same filesystem, so a reader never opens half of it and a crash leaves either the old
file or the new one. The distributor (models), the sync service (batches) and the worker
(candidates) all fetch this way: `fetch_and_place` is the one copy of fetch, place, and remove
the partial file on any failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from eventbus.connection import Bus
from eventbus.objects import Fetched, fetch_to_file


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding `path` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def incoming(folder: Path, name: str) -> Path:
    """A fresh temp path `folder/name` (a stale one from a crash is removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.unlink(missing_ok=True)
    return path


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def place(verified: Path, final: Path) -> None:
    """Move a verified, fsynced file to its final name atomically."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(verified, final)
    fsync_dir(final.parent)


def remove(path: Path) -> None:
    """Delete a file if it is there."""
    path.unlink(missing_ok=True)


async def fetch_and_place(bus: Bus, bucket: str, name: str, temp: Path, final: Path, *, expect_sha256: str,
                          expect_size: int | None = None, idle_timeout_s: float = 30.0) -> Fetched:
    """Download object `name` into `temp`, verified (eventbus.objects.fetch_to_file), then place it at `final`.

    Whatever fails (the bus, a corrupt copy, a full disk, a cancellation), `temp` is removed and the
    error raised: a partial file is never left behind nor seen under `final`.
    """
    try:
        fetched = await fetch_to_file(bus, bucket, name, temp, expect_sha256=expect_sha256, expect_size=expect_size,
                                      idle_timeout_s=idle_timeout_s)
        await asyncio.to_thread(place, temp, final)
    except BaseException:
        await asyncio.to_thread(remove, temp)
        raise
    return fetched
