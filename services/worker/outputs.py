"""Where an attempt writes, and what it produced: paths, sizes and SHA-256 (blocking: call in a thread)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

from config.nodedirs import SUFFIX, best_link_path, versions_dir
from eventbus.events import ArtifactRef
from eventbus.subjects import token
from servicekit.filehash import sha256_file


class AttemptPaths(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt's directory: the job runs in it, writes its outputs under out/, its log beside them."""

    root: Path
    output_dir: Path
    log_path: Path


def attempt_paths(worker_dir: Path, work_id: str, attempt: int) -> AttemptPaths:
    """<worker dir>/jobs/<work id>/a<attempt>/{out/, job.log}."""
    root = worker_dir / "jobs" / token(work_id) / f"a{attempt}"
    return AttemptPaths(root=root, output_dir=root / "out", log_path=root / "job.log")


class BestModel(msgspec.Struct, frozen=True, kw_only=True):
    """The model a job of a config plays with on this node: its file and its id."""

    path: Path
    model_id: str


def best_model(models_dir: Path, board_type: str, num_players: int) -> BestModel | None:
    """The config's best model on this node, if there is one (blocking).

    The seeds' `ringrift_best_<board>_<n>p.pth` names it (config/nodedirs.py); the distributor keeps it as a link to
    `canonical_<board>_<n>p.pth`, a hard link to `versions/<board>_<n>p/<model id>.pth`. The job
    gets that version file, which no promotion rewrites, so it keeps the model it started with;
    without a versions dir (a hand-made models dir) it gets the link's target and its stem as id.
    """
    link = best_link_path(models_dir, board_type, num_players)
    if not link.is_file():
        return None
    target = link.resolve()
    served = target.stat()
    versions = versions_dir(models_dir, board_type, num_players)
    for version in sorted(versions.glob(f"*{SUFFIX}")) if versions.is_dir() else []:
        st = version.stat()
        if (st.st_dev, st.st_ino) == (served.st_dev, served.st_ino):
            return BestModel(path=version, model_id=version.stem)
    return BestModel(path=target, model_id=target.stem)


def artifact(path: Path, node: str) -> ArtifactRef:
    """A file as an event refers to it: absolute path, size, SHA-256 and the node holding it."""
    size, sha256 = sha256_file(path)
    return ArtifactRef(path=str(path.absolute()), size_bytes=size, sha256=sha256, node=node)


def collect_outputs(output_dir: Path, extra: Iterable[Path], node: str) -> list[ArtifactRef]:
    """Every regular file under the output dir, plus `extra` files elsewhere that exist, sorted by path."""
    files = {p.absolute() for p in output_dir.rglob("*") if p.is_file() and not p.is_symlink()} if output_dir.is_dir() else set()
    files |= {p.absolute() for p in extra if p.is_file()}
    return [artifact(p, node) for p in sorted(files)]
