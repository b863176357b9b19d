"""One fleet host's service manager (what systemd's Restart=on-failure is on a real host).

`python -m ops.fleet.host SERVICE...`, started by `up` inside the host's namespace with the
host's environment: runs `rr-service SERVICE` for each, restarting a crashed one with rr up's
backoff (cli/up/supervisor.py), until SIGTERM. Logs: $RR_FLEET_HOST_LOGS/<service>.log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from cli.up.policy import RestartPolicy
from cli.up.supervisor import ChildSpec, Supervisor

LOGS_ENV = "RR_FLEET_HOST_LOGS"


def children(services: list[str], env: dict[str, str]) -> list[ChildSpec]:
    """One child per service, each logging to its own file."""
    logs = Path(env[LOGS_ENV])
    return [ChildSpec(name=s, argv=[sys.executable, "-m", "cli.service_main", s], env=env, log_path=logs / f"{s}.log")
            for s in services]


async def run(services: list[str]) -> None:
    """Keep the services running until SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    supervisor = Supervisor(children(services, dict(os.environ)), policy=RestartPolicy(cap_s=5.0), grace_s=5.0)
    await supervisor.run(stopping)


def main() -> int:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if len(sys.argv) < 2 or LOGS_ENV not in os.environ:
        print(f"usage: {LOGS_ENV}=DIR python -m ops.fleet.host SERVICE...", file=sys.stderr)
        return 2
    asyncio.run(run(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
