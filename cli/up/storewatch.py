"""Restart the embedded nats-server when its store stays broken after a full disk has room again.

A JetStream file store that hit ENOSPC keeps failing every write to that stream ("critical write
error ... no space left on device", then "failed to store a msg" every renewal) even once space
returns, until the server restarts: the lease bucket refuses renewals, no leader is elected and
scheduling stops. `rr up` reads its server's log; when the latest lines still report no space
while the data dir has room again, it restarts the server on the same port and store, logging
why. The services' NATS clients reconnect on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path

from cli.up.embedded import EmbeddedServer
from eventbus.natsserver import ServerStartError

log = logging.getLogger(__name__)

MIB = 1 << 20
NO_SPACE = "no space left on device"
FLOOR_BYTES = 16 * MIB  # api.min_free_mib 0 must not restart the server over and over on a disk still full


def stuck_store(new_log: str, free_bytes: int, min_free_bytes: int) -> str | None:
    """Why the server needs a restart, or None: its newest log lines report no space though there is room."""
    failing = [line for line in new_log.splitlines() if NO_SPACE in line]
    if not failing or free_bytes < max(min_free_bytes, FLOOR_BYTES):
        return None  # healthy, or still full: a restart would not help
    return (f"its store still fails writes with {NO_SPACE!r} while the data dir has {free_bytes // MIB} MiB free "
            f"(>= {min_free_bytes // MIB} MiB); last: {failing[-1].strip()[-200:]}")


def _read_from(path: Path, offset: int) -> tuple[str, int]:
    """The log's text from `offset` on, and the new offset (from 0 again if the file was replaced)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(offset if offset <= size else 0)
            data = f.read()
            return data.decode("utf-8", "replace"), f.tell()
    except FileNotFoundError:
        return "", 0


def _end_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def watch_store(server: EmbeddedServer, store_dir: Path, stopping: asyncio.Event, *,
                      min_free_mib: int, interval_s: float = 5.0) -> int:
    """Until `stopping` is set, restart the server whenever `stuck_store` says so; returns how many times."""
    offset = await asyncio.to_thread(_end_of, server.log_path)  # only lines from now on
    restarts = 0
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval_s)
        if stopping.is_set():
            break
        text, offset = await asyncio.to_thread(_read_from, server.log_path, offset)
        free = (await asyncio.to_thread(shutil.disk_usage, store_dir)).free
        reason = stuck_store(text, free, min_free_mib * MIB)
        if reason is None:
            continue
        log.warning("restarting the embedded nats-server: %s", reason)
        try:
            await server.restart()
        except ServerStartError as exc:  # the exit watcher (wait_exited) now stops rr up, naming the log
            log.error("the embedded nats-server did not start again: %s", str(exc).splitlines()[0])
            return restarts
        restarts += 1
        offset = await asyncio.to_thread(_end_of, server.log_path)  # the old run's lines are judged
    return restarts
