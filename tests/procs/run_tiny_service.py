"""Run tests/tiny_service.py:main through servicekit.runtime.run_service_process (as rr-service does) in its own process, until SIGTERM.

Usage: python -m tests.procs.run_tiny_service NATS_URL NODE_ID [FUNCTION]  (a function of tests/tiny_service.py; main)
"""

from __future__ import annotations

import asyncio
import sys

import msgspec

from servicekit.options import CommonOptions
from servicekit.runtime import ServiceEntry, run_service_process

GRACE_S = 3.0
TINY = ServiceEntry(name="tiny", target="tests.tiny_service:main", description="announces itself, then waits")


def main() -> None:
    """Run the tiny service with the given server and node id."""
    url, node_id = sys.argv[1:3]
    entry = TINY if len(sys.argv) < 4 else msgspec.structs.replace(TINY, target=f"tests.tiny_service:{sys.argv[3]}")
    asyncio.run(run_service_process(entry, CommonOptions(nats_url=url, node_id=node_id, config_path=None), grace_s=GRACE_S))


if __name__ == "__main__":
    main()
