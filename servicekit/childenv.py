"""The environment of the processes rr starts (services under `rr up`, jobs under the worker).

Ours, with this checkout first on PYTHONPATH (once) so `python -m services...` imports this rr
whatever the current directory, and Python output unbuffered so a child's log is current when
it dies. Entries are joined with os.pathsep, as Python splits them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


def child_env(env: Mapping[str, str], project_root: str = PROJECT_ROOT) -> dict[str, str]:
    """`env` with `project_root` first on PYTHONPATH and PYTHONUNBUFFERED set."""
    rest = (p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != project_root)
    return {**env, "PYTHONPATH": os.pathsep.join([project_root, *rest]), "PYTHONUNBUFFERED": "1"}
