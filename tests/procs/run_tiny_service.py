"""Run tests/tiny_service.py:main through services.runtime.run_service in its own process, until SIGTERM.

Usage: python -m tests.procs.run_tiny_service NATS_URL NODE_ID
"""

from __future__ import annotations

import asyncio
import sys

from services.options import CommonOptions
from services.runtime import ServiceEntry, run_service

TINY = ServiceEntry(name="tiny", target="tests.tiny_service:main", description="announces itself, then waits")


def main() -> None:
    """Run the tiny service with the given server and node id."""
    url, node_id = sys.argv[1:3]
    asyncio.run(run_service(TINY, CommonOptions(nats_url=url, node_id=node_id, config_path=None)))


if __name__ == "__main__":
    main()
