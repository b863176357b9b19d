"""The running-jobs file: the worker writes the jobs it runs now, the agent reports them in each beat.

A file, not a call, because the worker and the agent are separate processes; written to a
temporary name and renamed, so the agent never reads half a list. Where it lives is the node's
disk layout's to say (`config.nodedirs.jobs_file_for`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec

from eventbus.heartbeats import RunningJob

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(list[RunningJob])


def write_running_jobs(path: str | Path, jobs: list[RunningJob]) -> None:
    """Replace the file's list atomically (blocking: call it in a thread)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.encode(jobs))
    os.replace(tmp, path)


def read_running_jobs(path: str | Path | None) -> list[RunningJob]:
    """The jobs the file lists; [] when there is no file (no worker yet) or it cannot be read (logged)."""
    if path is None:
        return []
    try:
        return _decoder.decode(Path(path).read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, msgspec.DecodeError) as exc:
        log.warning("running jobs file %s unreadable: %s", path, exc)
        return []
