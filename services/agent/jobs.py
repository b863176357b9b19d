"""The running-jobs file: the worker writes the jobs it runs now, the agent reports them in each beat.

A file, not a call, because the worker and the agent are separate processes; written to a
temporary name and renamed, so the agent never reads half a list.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from config.nodedirs import default_data_dir
from config.settings import RrConfig
from eventbus.heartbeats import RunningJob
from eventbus.subjects import token

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(list[RunningJob])


JOBS_FILE = "running-jobs.json"


def jobs_file_for(config: RrConfig, node: str, env: Mapping[str, str], home: Path) -> Path:
    """`membership.jobs_file` when set, else <data dir>/worker/<node>/running-jobs.json: the worker writes it, the agent reads it."""
    if config.membership.jobs_file:
        return Path(config.membership.jobs_file).expanduser()
    data_dir = Path(config.worker.data_dir).expanduser() if config.worker.data_dir else default_data_dir(env, home)
    return data_dir.absolute() / "worker" / token(node) / JOBS_FILE


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
