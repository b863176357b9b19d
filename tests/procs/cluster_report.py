"""The frame of a background run on a 3-server cluster of its own: run the scenario, print its report as one JSON line."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec

from eventbus.natsserver import NatsCluster
from tests.procs.stoppable import cancelled_by_sigterm


def report_on_cluster(prefix: str, scenario: Callable[[NatsCluster, Path], Coroutine[Any, Any, msgspec.Struct]]) -> int:
    """Run `scenario(cluster, tmp)` on a fresh cluster in a temporary directory (SIGTERM cancels it); print what it
    reports; the exit status. A scenario that raises ends the process with its traceback."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        with NatsCluster.create(Path(tmp) / "cluster", size=3) as cluster:
            report = asyncio.run(cancelled_by_sigterm(scenario(cluster, Path(tmp))))
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    return 0
