"""What the embedded server's store reserves, and whether the data dir's disk holds it (pure but `store_bytes`).

JetStream reserves each stream's max_bytes up front, and nats-server without max_file_store
caps its store at 3/4 of the disk space free when it starts: streams that do not fit are
refused at provisioning. `rr up` checks before starting anything, so the operator gets one
line with what is needed, what is free and which settings lower it.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from config.settings import RrConfig
from eventbus.streams import GIB, SIZE_SETTINGS, declared_streams

MIB = 1 << 20
STORE_SHARE = 0.75  # nats-server's default max_file_store: 75% of the store dir's free disk space


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    """One stream or bucket the store reserves, and the config key that sizes it."""

    name: str
    max_bytes: int
    setting: str


def reservations(config: RrConfig) -> list[Reservation]:
    """Every size the store reserves on disk with this config; unlimited buckets (0) reserve nothing."""
    if config.streams.storage == "memory":
        return []  # memory streams reserve RAM, not the data dir's disk
    streams = [
        Reservation(name=spec.name, max_bytes=spec.max_bytes, setting=f"streams.{SIZE_SETTINGS[spec.name]}")
        for spec in declared_streams(config.streams)
    ]
    # The object-store buckets of models and data (OBJ_<bucket>), when the config bounds them.
    buckets = [
        Reservation(name=name, max_bytes=int(gib * GIB), setting=setting)
        for name, gib, setting in (
            ("model store", config.distribution.store_max_gib, "distribution.store_max_gib"),
            ("data store", config.sync.store_max_gib, "sync.store_max_gib"),
        )
        if gib > 0
    ]
    return streams + buckets


def shortfall(wanted: list[Reservation], free_bytes: int, stored_bytes: int) -> str | None:
    """None when the store fits; else one line: needed, free, and the settings that lower it.

    `stored_bytes` are already in the store (a restart), inside the reservations: they count as room.
    """
    needed = sum(r.max_bytes for r in wanted)
    room = int((free_bytes + stored_bytes) * STORE_SHARE)
    if needed <= room:
        return None
    largest = sorted(wanted, key=lambda r: r.max_bytes, reverse=True)
    lower = ", ".join(f"{r.setting}={r.max_bytes / GIB:g}" for r in largest if r.max_bytes > 0)
    return (f"the streams need {needed / GIB:.2f} GiB reserved but the data dir's disk has {free_bytes / GIB:.2f} GiB "
            f"free ({STORE_SHARE:.0%} of free space plus the store's {stored_bytes / MIB:.0f} MiB is usable, "
            f"{room / GIB:.2f} GiB): free space, use --data-dir on a larger disk, or lower {lower} in the config")


def store_bytes(store_dir: Path) -> int:
    """Bytes of the files under the store dir now (0 when absent)."""
    total = 0
    for root, _dirs, files in os.walk(store_dir):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while walking: no longer there to count
    return total
