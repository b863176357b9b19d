"""Installing model files atomically on this node (blocking: call through asyncio.to_thread).

A model is placed as servicekit/fileplace.py places every fetched file (complete and fsynced
before its rename), so a job never opens half a model and a crash leaves either the old model
or the new one. The current model is a hard link to its kept version (no second copy).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import msgspec

from config.nodedirs import INCOMING, SUFFIX, VERSIONS, best_link_of, best_link_path, canonical_of, canonical_path
from servicekit import fileplace
from servicekit.filehash import copy_hashed


class LocalModels(msgspec.Struct, frozen=True, kw_only=True):
    """The verified versions on this node per config (stem -> size) and which one is current."""

    versions: dict[str, dict[str, int]] = {}  # config name -> model file stem -> bytes
    active: dict[str, str] = {}  # config name -> stem of the version the canonical file and link serve

    def size_of(self, config: str, stem: str) -> int | None:
        """Bytes of a kept version, None when it is not here."""
        return self.versions.get(config, {}).get(stem)


def scan(root: Path) -> LocalModels:
    """What is installed under a models dir (an absent dir is empty)."""
    versions: dict[str, dict[str, int]] = {}
    active: dict[str, str] = {}
    base = root / VERSIONS
    for config_dir in sorted(base.iterdir()) if base.is_dir() else []:
        if not config_dir.is_dir():
            continue
        files = {p.name[: -len(SUFFIX)]: p.stat() for p in config_dir.iterdir() if p.is_file() and p.name.endswith(SUFFIX)}
        versions[config_dir.name] = {stem: st.st_size for stem, st in files.items()}
        current = _serving(root, config_dir.name)
        for stem, st in files.items():
            if current is not None and (st.st_dev, st.st_ino) == current:
                active[config_dir.name] = stem
    return LocalModels(versions=versions, active=active)


def _serving(root: Path, config: str) -> tuple[int, int] | None:
    # (device, inode) of the canonical file, if the seeds' link points at it.
    canonical, link = canonical_of(root, config), best_link_of(root, config)
    try:
        if os.readlink(link) != canonical.name:
            return None
        st = canonical.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def incoming(root: Path, name: str) -> Path:
    """A fresh temp path under <models dir>/.incoming (a stale one from a crash is removed)."""
    return fileplace.incoming(root / INCOMING, name)


def activate(root: Path, board_type: str, num_players: int, version: Path) -> Path:
    """Make `version` the config's current model: canonical file replaced atomically, seeds' link onto it."""
    canonical = canonical_path(root, board_type, num_players)
    temp = canonical.with_name(f".{canonical.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    try:
        os.link(version, temp)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        copy_hashed(version, temp)  # a filesystem without hard links: a second copy
    os.replace(temp, canonical)
    link = best_link_path(root, board_type, num_players)
    if not (link.is_symlink() and os.readlink(link) == canonical.name):
        temp_link = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        temp_link.unlink(missing_ok=True)
        os.symlink(canonical.name, temp_link)  # relative: the models dir can move
        os.replace(temp_link, link)
    fileplace.fsync_dir(root)
    return canonical
